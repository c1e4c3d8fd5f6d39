"""The size of live capture's kernel ring (sensor/capture/live.py), apart from the capture
itself: the command line reads the default and the bound of --ring-mb from here without
loading ctypes and libpcap's bindings (~3 ms of every command's start)."""

# The ring of each interface (per worker), MiB by default (--ring-mb): about a quarter of a
# second of a saturated 1 Gbit/s port if the filter passed everything, half a second of a
# small-message mix at 150k packets/s (~450 bytes of ring per frame). Zeek's AF_Packet
# buffer is 128 MiB by default; the kernel never swaps a ring out, so bigger is opt-in.
RING_MB = 32
# Largest --ring-mb: beyond what any burst needs, below what a typo should be allowed to pin.
MAX_RING_MB = 4096
