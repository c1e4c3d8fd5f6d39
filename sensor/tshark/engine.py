"""The source stage of the tshark engine: pyshark runs tshark and hands over its JSON trees.

pyshark (the design card's choice) manages the tshark process and parses its ``-T json``
output, keeping repeated layers (several DCE/RPC PDUs in a frame) and repeated fields as
lists. This module only narrows what tshark prints: frames that carry something the
decoder reads (display filter) and the protocol trees it reads (``-J``), with ``-x`` for the
stub bytes. Everything after is TsharkDecoder, then the shared event builder.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sensor.anomaly import Stats
from sensor.interfaces.catalog import Catalog
from sensor.net.stream import FlowKey
from sensor.smb.events import PipeId
from sensor.tshark.arguments import STUB_PROTOCOLS
from sensor.tshark.decoder import Packet, TsharkDecoder, TsharkDecoderSettings
from sensor.tshark.version import TsharkUnavailable, require_tshark

# Frames the decoder reads: DCE/RPC PDUs, SMB negotiate/session setup (dialect, NTLMSSP),
# creates (pipe names), tree connects, and SMB3 transform headers (encrypted sessions).
# Bulk SMB file I/O never leaves tshark.
DISPLAY_FILTER = (
    "dcerpc || ntlmssp || smb2.cmd == 0 || smb2.cmd == 3 || smb2.cmd == 5 || smb2.cmd == 8"
    " || smb.cmd == 0x72 || smb.cmd == 0x75 || smb.cmd == 0xa2 || smb2.header.transform.msg_size"
)
# Protocol trees printed (tshark -J): the rest of a frame (eth, nbss, tcp payload hex) is
# most of tshark's output and none of the decoder's input.
PROTOCOLS = "frame ip ipv6 tcp smb smb_pipe smb2 dcerpc " + " ".join(STUB_PROTOCOLS)
# pyshark wraps each layer; the decoder reads the plain dicts beneath.
RAW_LAYER_SUFFIX = "_raw"


def packet_layers(packet) -> Packet:
    """A pyshark JSON packet as {layer name: [layer dicts]} (repeated layers kept in order)."""
    layers: Packet = {"frame": [packet.frame_info._all_fields]}
    for layer in packet.layers:
        name = layer.layer_name
        if name.endswith(RAW_LAYER_SUFFIX):
            continue
        layers.setdefault(name, []).extend(
            [layer._all_fields] + [dup._all_fields for dup in layer.duplicate_layers])
    return layers


class TsharkEngine:
    """``TsharkEngine(catalog=..., tshark_path=..., rpc_observer=...)``; then ``run_file(path)``
    or ``run_live(capture, decoder)``, each yielding RpcCallEvents (and Anomalies, none today).
    ``stats`` sums the decoders of every run."""

    def __init__(self, catalog: Catalog | None = None, tshark_path: str | None = None,
                 rpc_observer: Callable[[FlowKey, PipeId | None, object], None] | None = None):
        self.catalog = catalog
        self.tshark_path, self.tshark_version = require_tshark(tshark_path)
        self.rpc_observer = rpc_observer
        self.stats = Stats()
        # asyncio's child watcher logs "Unknown child process pid N" for a tshark that exited
        # fast; _drive counts those (tshark.exit_status_lost), the user's terminal need not.
        logging.getLogger("asyncio").setLevel(logging.ERROR)

    def decoder(self, capture_name: str) -> TsharkDecoder:
        """A fresh decode stage whose events name ``capture_name`` as their capture file."""
        return TsharkDecoder(TsharkDecoderSettings(self.catalog, capture_name, self.rpc_observer))

    def _drive(self, capture, decoder: TsharkDecoder, packets: Iterable) -> Iterator:
        from pyshark.capture.capture import TSharkCrashException

        finished = False
        try:
            for packet in packets:
                yield from decoder.feed(packet_layers(packet))
            finished = True
            yield from decoder.close()
        finally:
            self.stats.update(decoder.stats)
            try:
                capture.close()
            except TSharkCrashException:
                # asyncio's child watcher can lose a tshark that exited fast ("Unknown child
                # process pid, will report returncode 255"); after a complete read that is
                # noise, before it a real failure.
                if not finished:
                    raise
                self.stats["tshark.exit_status_lost"] += 1
            finally:
                capture._running_processes.clear()     # else pyshark retries in __del__
                capture.eventloop.close()

    def run_file(self, path: str | Path) -> Iterator:
        import pyshark

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(path)
        capture = pyshark.FileCapture(
            str(path), use_json=True, include_raw=True, display_filter=DISPLAY_FILTER,
            tshark_path=self.tshark_path, custom_parameters=["-J", PROTOCOLS],
            eventloop=asyncio.new_event_loop())
        return self._drive(capture, self.decoder(path.name), capture)

    def run_live(self, capture, decoder: TsharkDecoder) -> Iterator:
        """The records of a pyshark live capture (sensor.tshark.live.DumpcapCapture); runs
        until its dumpcap stops. ``decoder.stats`` may be read meanwhile (packets so far)."""
        return self._drive(capture, decoder, capture.sniff_continuously())


def replay_events(paths: Iterable[str | Path], catalog: Catalog | None = None,
                  tshark_path: str | None = None) -> Iterator:
    """What ``dfs-sensor replay --engine tshark`` runs: every capture in turn, its events in
    the order the native pipeline would give them. Raises TsharkUnavailable up front."""
    engine = TsharkEngine(catalog, tshark_path)
    for path in paths:
        yield from engine.run_file(path)


__all__ = ["TsharkEngine", "TsharkUnavailable", "replay_events", "DISPLAY_FILTER", "PROTOCOLS"]
