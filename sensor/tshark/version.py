"""Finding tshark and refusing versions whose field names this engine does not read."""
from __future__ import annotations

import re
import shutil
import subprocess

# The release this engine was written and tested against (Debian 12: 4.0.17-0+deb12u3).
TESTED_VERSION = "4.0.17"
# 4.0 is the first release with the field names read here (dcerpc.payload_stub_data under
# "Complete stub data", smb2.sesid_tree); older ones are refused rather than half-read.
MINIMUM_VERSION = (4, 0, 0)
VERSION_PATTERN = re.compile(rb"TShark \(Wireshark\) (\d+)\.(\d+)\.(\d+)")


class TsharkUnavailable(RuntimeError):
    """tshark is missing, does not run, or is older than MINIMUM_VERSION."""


def require_tshark(path: str | None = None) -> tuple[str, tuple[int, int, int]]:
    """The tshark executable and its version, or TsharkUnavailable saying what to do."""
    exe = path or shutil.which("tshark")
    if not exe:
        raise TsharkUnavailable("tshark is not installed: `apt-get install tshark` (tested with "
                                f"{TESTED_VERSION}), or use --engine native")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise TsharkUnavailable(f"{exe} --version failed: {exc}") from exc
    found = VERSION_PATTERN.search(out)
    if not found:
        raise TsharkUnavailable(f"{exe} --version did not print a TShark version")
    version = tuple(int(x) for x in found.groups())
    if version < MINIMUM_VERSION:
        wanted = ".".join(map(str, MINIMUM_VERSION))
        raise TsharkUnavailable(f"tshark {'.'.join(map(str, version))} is too old: this engine needs "
                                f"{wanted} or later (tested with {TESTED_VERSION})")
    return exe, version  # type: ignore[return-value]
