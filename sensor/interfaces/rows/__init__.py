"""The catalog's rows, one module per protocol: data only (uuids, pipes, operation names, the
listener arguments, and the dotted paths of the NDR request types, which are imported at the
first decode of a call on the interface: sensor/interfaces/catalog.py)."""
