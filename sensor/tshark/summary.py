"""The run summary as the tshark engine can honestly state it.

tshark hands over only the frames its display filter passed (sensor.tshark.engine.
DISPLAY_FILTER), so the frames it read are unknown: "n/a", with the decoded count beside.
Bytes are the capture files' sizes on replay, unknown live.
"""
from __future__ import annotations

from dataclasses import replace

from sensor.runner import Summary


def tshark_summary(summary: Summary, file_bytes: int | None) -> str:
    """``summary.human()`` with the packet and byte counts the tshark engine knows."""
    decoded = summary.packets
    honest = replace(summary, bytes=file_bytes or 0)
    head, _, rest = honest.human().partition("\n")
    packets = f"{decoded:,} packets, "
    size = f"{honest.bytes / 1e6:,.1f} MB, "
    head = head.replace(packets, f"packets n/a ({decoded:,} decoded by tshark), ", 1)
    if file_bytes is None:
        head = head.replace(size, "", 1).replace(f" ({honest.mb_per_s:,.1f} MB/s)", "", 1)
    return head + ("\n" + rest if rest else "")
