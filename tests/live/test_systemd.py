"""systemd/dfs-sensor.service: systemd accepts it, and it grants CAP_NET_RAW and nothing else."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "systemd" / "dfs-sensor.service"
INSTALLED_BINARY = "/usr/local/bin/dfs-sensor"


def service_section() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().split("[Service]")[1].split("[Install]")[0].splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify insists the ExecStart binary exists; point it at this checkout's interpreter.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(Path(sys.executable).resolve())))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_unit_keeps_only_cap_net_raw_and_the_hardening():
    service = service_section()
    assert service["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert service["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert service["RestrictAddressFamilies"] == ["AF_PACKET AF_UNIX AF_NETLINK"]
    for key, value in [("DynamicUser", "yes"), ("StateDirectory", "dfs-sensor"), ("NoNewPrivileges", "yes"),
                       ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("Restart", "on-failure")]:
        assert service[key] == [value]
    assert service["MemoryMax"][0].endswith(("M", "G"))
    assert service["ExecStart"][0].startswith(INSTALLED_BINARY + " live ")
