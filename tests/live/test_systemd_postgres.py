"""systemd/dfs-sensor.service.d/postgresql.conf: the drop-in for a fleet store opens TCP to
one address and hands libpq its password file as a credential; systemd accepts the result."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live.test_systemd import INSTALLED_BINARY, UNIT

DROP_IN = UNIT.parent / "dfs-sensor.service.d" / "postgresql.conf"


def drop_in_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in DROP_IN.read_text().split("[Service]")[1].splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_drop_in_opens_only_the_database_connection():
    settings = drop_in_settings()
    assert settings == {"RestrictAddressFamilies": ["AF_INET AF_INET6"], "IPAddressAllow": ["192.0.2.10"],
                        "LoadCredential": ["pgpass:/etc/dfs-sensor/pgpass"],
                        "Environment": ["PGPASSFILE=%d/pgpass"]}
    assert "IPAddressDeny=any" in UNIT.read_text()          # everything else stays closed


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit_with_the_drop_in(tmp_path):
    unit = tmp_path / UNIT.name
    service = UNIT.read_text().replace(INSTALLED_BINARY, str(Path(sys.executable).resolve()))
    extra = DROP_IN.read_text().split("[Service]")[1]
    unit.write_text(service.replace("[Install]", extra.strip() + "\n\n[Install]"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
