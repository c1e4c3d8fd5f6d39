"""Read commands that do not mislead: --server/--client by address, CIDR range or name,
compared canonically (an IPv6 address written another way, a mapped IPv4 address, a short
name for an FQDN); `alerts --server DC01` finds the coercion alerts about DC01; an unknown
--rule is exit 2 listing the known rules."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DFS_SENSOR = str(ROOT / ".venv" / "bin" / "dfs-sensor")
PCAPS = ROOT / "pcaps"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([DFS_SENSOR, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("filters") / "s.db"
    for name in ("coerced-auth-clear.pcap", "dfscoerce-ipv6.pcap"):
        assert run("replay", "--db", db, PCAPS / name).returncode == 0
    return db


def rules(db: Path, *filters: str, kind: str = "alerts") -> list[str]:
    done = run(kind, "--db", db, "--format", "json", *filters)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    return sorted(r["rule"]["id"] if kind == "alerts" else r["event_id"] for r in records)


def test_server_by_name_includes_the_coercion_alerts_about_it(store):
    both = ["coercion-confirmed", "dfscoerce-rare-dfsnm-root-call"]
    # coerced-auth-clear: DC01 at 10.0.0.10; the IPv6 capture's server is fd00::10
    assert rules(store, "--server", "DC01", "--client", "10.0.0.66") == both
    assert rules(store, "--server", "dc01.lab.example.", "--client", "10.0.0.66") == both
    assert rules(store, "--server", "10.0.0.10") == both
    assert rules(store, "--server", "::ffff:10.0.0.10") == both


def test_cidr_and_ipv6_written_differently(store):
    assert rules(store, "--client", "10.0.0.64/28") == ["coercion-confirmed", "dfscoerce-rare-dfsnm-root-call"]
    assert rules(store, "--client", "10.0.0.0/26") == []
    v6 = rules(store, "--client", "FD00:0:0:0::66")
    assert v6 == rules(store, "--client", "fd00::/64") == ["dfscoerce-rare-dfsnm-root-call"] * 2   # opnums 12, 13
    assert rules(store, "--client", "fd00:0000::0066", kind="events") == rules(store, "--client", "fd00::66",
                                                                              kind="events") != []


def test_unknown_rule_is_exit_2_listing_the_known_ones(store):
    done = run("alerts", "--db", store, "--rule", "coercion-confirmd")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("dfs-sensor: error: --rule coercion-confirmd: unknown rule; known rules: ")
    assert "coercion-confirmed" in done.stderr and "dfscoerce-rare-dfsnm-root-call" in done.stderr


@pytest.mark.parametrize("value", ["10.0.0.0/33", "a b", "\\\\host\\share", ""])
def test_a_bad_host_is_a_usage_error(store, value):
    done = run("alerts", "--db", store, "--client", value)
    assert done.returncode == 2 and "--client" in done.stderr
