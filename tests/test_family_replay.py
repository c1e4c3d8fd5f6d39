"""`dfs-sensor replay` on the coercion family's lab captures, with its embedded defaults and
the configuration the manifest gives a capture (``config``: the deployment's declared roles,
e.g. the lab's print server in ``[address_groups] print_servers``): each raises exactly the
rules its manifest lists (each at least once) (the family's rarity rules run beside
DFSCoerce's, with the correlator), and the benign look-alikes raise none."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PCAPS, ROOT

FAMILY = PCAPS / "family"
MANIFEST = json.loads((FAMILY / "manifest.json").read_text())["captures"]


def toml(config: dict) -> str:
    """The manifest's configuration (sections of lists of strings) as a TOML file's text."""
    return "".join(f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items())
                   for section, keys in config.items())


def replay(name: str, tmp_path: Path, config: dict) -> set[str]:
    """The rule ids replaying the capture raises (a rarity rule raises one alert per key)."""
    options = []
    if config:
        (tmp_path / "sensor.toml").write_text(toml(config))
        options = ["--config", str(tmp_path / "sensor.toml")]
    run = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", str(tmp_path / "s.db"), *options,
                          str(FAMILY / name)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return {json.loads(line)["rule"]["id"] for line in run.stdout.splitlines()}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_replay_raises_the_manifests_alerts(name, tmp_path: Path):
    assert replay(name, tmp_path, MANIFEST[name].get("config", {})) == set(MANIFEST[name]["expected_alerts"])


def test_benign_printing_is_the_first_days_alert_of_a_rarity_rule_until_print_servers_are_declared(tmp_path):
    """The documented default: with no [address_groups], a print client registering its own
    notifications is the same call as PrinterBug naming the attacker's host, and alerts."""
    assert MANIFEST["benign-printing.pcap"]["config"] == {"address_groups": {"print_servers": ["10.0.0.10"]}}
    assert replay("benign-printing.pcap", tmp_path, {}) == {"coercion-rare-rprn-call"}


def test_a_self_naming_printerbug_on_a_declared_print_server_is_still_confirmed_by_its_back_authentication(tmp_path):
    """What the declaration trusts away is the rarity alert only: DC01$ authenticating back to
    the attacker it was coerced to still makes coercion-confirmed."""
    declared = {"address_groups": {"print_servers": ["10.0.0.10"]}}
    assert replay("rprn-backauth-smb.pcap", tmp_path, declared) == {"coercion-confirmed"}
