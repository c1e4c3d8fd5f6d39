"""A second decode engine on Wireshark's dissectors (tshark, driven through pyshark).

Only the source and decode stages differ from the native engine: calls and their context
are handed to sensor.event_builder, so catalog, detector, store and outputs are shared.
"""
