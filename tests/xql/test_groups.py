"""Address groups (``[address_groups]`` in the configuration, ``<expr> in $<group>`` in XQL):
the canonical host comparison, the same rows from the streaming evaluator and from SQLite,
PostgreSQL's refusal of a group with entries, and the errors a user sees."""
from __future__ import annotations

import ipaddress
import json
import random
import re
import subprocess
import sys

import pytest

from rarity_events import rpc_event, ts_of
from tests.conftest import PCAPS, ROOT
from sensor.store import open_store
from sensor.store.sqlite import ListFilter
from sensor.xql import ast
from sensor.xql.check import check
from sensor.xql.groups import ADDRESS_PATTERN, DEFAULT_GROUPS, address_groups, in_group
from sensor.xql.parser import XqlError, parse
from sensor.xql.rules import RarityPlan, RuleError, parse_rule
from sensor.xql.sql import compile_query, rows

GROUP = ("10.0.0.10", "ps1.corp.example", "10.1.0.0/24", "2001:db8::10", "fd00::/64")


@pytest.mark.parametrize("value,member", [
    ("10.0.0.10", True),
    ("10.0.0.11", False),
    ("10.1.0.200", True),                 # in the CIDR range
    ("10.1.1.1", False),
    ("::ffff:10.0.0.10", True),           # IPv4-mapped IPv6 is the IPv4 host
    ("2001:0db8:0:0::10", True),          # IPv6 written differently
    ("2001:DB8::0010", True),
    ("fd00::1:2", True),
    ("fd00:0:0:1::2", False),
    ("PS1.CORP.EXAMPLE.", True),          # without case or the trailing dot
    ("ps1", True),                        # a short name is the FQDN's first label
    ("ps1.evil.example", False),
    ("ps2.corp.example", False),
    ("", False),
    (None, None),                         # unknown, as `in (...)` with a null value
])
def test_membership_is_canonical(value, member):
    assert in_group(value, GROUP) is member


def test_an_address_never_matches_a_name_entry_by_its_first_label():
    """A name entry "10" must not take 10.0.0.5 as a host whose first label is 10."""
    assert in_group("10.0.0.5", ("10",)) is False


def test_the_address_pattern_postgresql_tests_before_its_cast_accepts_what_ipaddress_reads():
    """Random texts of address characters and hextet-shaped parts: the pattern (which guards
    PostgreSQL's cast to inet) and Python's ipaddress agree on every one."""
    def is_address(text):
        try:
            ipaddress.ip_address(text)
            return True
        except ValueError:
            return False
    rng = random.Random(13)
    parts = ["", "0", "a", "ffff", "FFFF", "00000", "12345", "1.2.3.4", "01.2.3.4", "255.255.255.255", "256.1.1.1"]
    texts = ["".join(rng.choice("0123456789abcdefABCDEF:. x") for _ in range(rng.randint(1, 16))) for _ in range(20000)]
    texts += [":".join(rng.choice(parts) for _ in range(rng.randint(1, 10))) for _ in range(20000)]
    assert sum(map(is_address, texts)) > 400       # both kinds of answer are well represented
    assert [t for t in texts if bool(re.fullmatch(ADDRESS_PATTERN, t)) != is_address(t)] == []


def test_declared_groups_extend_the_defaults_which_are_empty():
    assert dict(DEFAULT_GROUPS) == {"print_servers": ()}
    groups = dict(address_groups({"dns_servers": ["10.0.0.53"]}))
    assert groups == {"print_servers": (), "dns_servers": ("10.0.0.53",)}


@pytest.mark.parametrize("declared,message", [
    ({"print_servers": ["10.0.0.300"]}, "address_groups.print_servers: '10.0.0.300' is not an address"),
    ({"print_servers": ["10.0.0.0/33"]}, "address_groups.print_servers: '10.0.0.0/33' is not an address"),
    ({"print_servers": ["\\\\ps1"]}, "is not an address, a CIDR range or a host name"),
    ({"print_servers": [""]}, "address_groups.print_servers: an empty host"),
    ({"print_servers": "10.0.0.10"}, "address_groups.print_servers must be a list"),
    ({"print_servers": [10]}, "address_groups.print_servers must be a list"),
    ({"print-servers": []}, "'print-servers' is not a group name"),
])
def test_bad_declarations_are_refused_with_one_line(declared, message):
    with pytest.raises(ValueError) as e:
        address_groups(declared)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_group_is_a_rule_error_naming_the_line_and_the_declared_groups():
    with pytest.raises(RuleError) as e:
        parse_rule("// id: x\nfilter agent_ip in $dns_servers", "x.xql")
    assert str(e.value).startswith("x.xql: line 2, column 20: unknown address group $dns_servers")
    assert "$print_servers" in str(e.value) and "[address_groups]" in str(e.value)


def test_a_group_is_written_with_its_dollar_sign():
    with pytest.raises(XqlError):
        parse("filter agent_ip in print_servers")


# -- the same rows from SQL and from the streaming evaluator --------------------------------
SERVERS = [("DC01", "10.0.0.10"), ("PS1.corp.example", "10.0.0.20"), ("FS1", "10.1.0.7"), ("WS9", "2001:db8::10"),
           ("DC02", "10.0.0.30")]
DECLARED = address_groups({"print_servers": ["ps1", "10.1.0.0/24", "2001:0db8::0:10"]})


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request, tmp_path_factory):
    if request.param == "sqlite":
        store = open_store(str(tmp_path_factory.mktemp("groups") / "s.db"))
    else:
        store = open_store(request.getfixturevalue("postgres").create_database("xql_groups"))
    with store.transaction():
        for n, (name, address) in enumerate(SERVERS):
            store.add_event(rpc_event(ts_of("2026-01-05", n), call_id=n, server=name, server_ip=address))
    yield store
    store.close()


def run(store, text, groups):
    """SQL's rows, checked against the streaming evaluator on every stored event."""
    checked = check(parse(text), groups)
    found = rows(store, compile_query(checked, 0, 10**15, store.XQL_DIALECT))
    assert all(isinstance(s, (ast.Alter, ast.Filter, ast.Fields)) for s in checked.stages)
    plan = RarityPlan(None, checked.stages, (), "", "", 0, checked.case_sensitive)
    records = store.events(ListFilter(limit=100))
    python = [plan.event_row(dict(r, _time=r["event_timestamp"])) for r in records]
    assert sorted(r["agent_hostname"] for r in python if r is not None) == sorted(r["agent_hostname"] for r in found)
    return sorted(r["agent_hostname"] for r in found)


QUERY = "filter agent_ip in $print_servers or agent_hostname in $print_servers | fields agent_hostname"
NOT_QUERY = "filter not (agent_ip in $print_servers or agent_hostname in $print_servers) | fields agent_hostname"
NEGATED = "filter agent_ip not in $print_servers and agent_hostname not in $print_servers | fields agent_hostname"


def test_the_group_selects_its_hosts_by_address_range_and_name(store):
    assert run(store, QUERY, DECLARED) == ["FS1", "PS1.corp.example", "WS9"]
    assert run(store, NOT_QUERY, DECLARED) == run(store, NEGATED, DECLARED) == ["DC01", "DC02"]


# Texts that are addresses or nearly so, names and neither: PostgreSQL's SQL must say what
# groups.py says of each, and never fail the query on one that is no address.
TRICKY = ["10.0.0.10", "10.0.0.010", "10.0.0.256", "10.1.0.255", "10.1.0", "::ffff:10.1.0.9", "::ffff:a01:9",
          "::FFFF:10.0.0.10", "2001:db8::10", "2001:0DB8:0000::0010", "2001:db8::10%eth0", "2001:db8::10/128",
          "2001:db8:::10", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::", "fd00::abcd", "fd00::1.2.3.4",
          "fd00:0:0:1::1", "::ffff:0:0", "PS1", " ps1.corp.example. ", "ps1.CORP.example..", "ps1.evil", "PS1.",
          "fs1", "fs1.other.example", "10", "10.", "", " ", "%", "%eth0", "ps1%x", "ps1\t",
          "\x1ffs1\x0b", "ünïcode.example",
          "a'b", "x" * 300]
TRICKY_GROUP = ("ps1.corp.example", "fs1", "10.0.0.10", "10.1.0.0/24", "2001:db8::10", "fd00::/64",
                "::ffff:10.2.0.0/112")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tricky_store(request, tmp_path_factory):
    if request.param == "sqlite":
        store = open_store(str(tmp_path_factory.mktemp("groups") / "t.db"))
    else:
        store = open_store(request.getfixturevalue("postgres").create_database("xql_groups_tricky"))
    with store.transaction():
        for n, text in enumerate(TRICKY):
            store.add_event(rpc_event(ts_of("2026-01-05", n % 24), call_id=n, server=text))
    yield store
    store.close()


@pytest.mark.parametrize("negated", [False, True])
def test_sql_says_what_groups_py_says_of_every_text(tricky_store, negated):
    query = f"filter agent_hostname {'not ' if negated else ''}in $g | fields agent_hostname"
    groups = address_groups({"g": list(TRICKY_GROUP)})
    found = run(tricky_store, query, groups)
    assert found == sorted(t for t in TRICKY if in_group(t, TRICKY_GROUP) is not negated)
    assert {"10.0.0.10", "::ffff:10.1.0.9", "2001:0DB8:0000::0010", "PS1", " ps1.corp.example. ", "\x1ffs1\x0b"} <= set(
        t for t in TRICKY if in_group(t, TRICKY_GROUP))


def test_an_empty_group_holds_nothing_on_both_stores(store):
    assert run(store, QUERY, DEFAULT_GROUPS) == []
    assert run(store, NEGATED, DEFAULT_GROUPS) == sorted(name for name, _ in SERVERS)


# -- the command line: replay and hunt --xql with a configuration ---------------------------
def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sensor.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_a_bad_group_entry_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[address_groups]\nprint_servers = ["10.0.0.10", "ps1 corp"]\n')
    done = cli("replay", "--config", config, "--db", tmp_path / "s.db", PCAPS / "family" / "benign-printing.pcap")
    assert done.returncode == 2 and not (tmp_path / "s.db").exists()
    assert done.stderr == ("dfs-sensor: error: address_groups.print_servers: 'ps1 corp' is not an address, "
                           "a CIDR range or a host name\n")


def test_an_unknown_group_in_a_users_rule_is_one_line_and_exit_2(tmp_path):
    rule = tmp_path / "dns.xql"
    rule.write_text("// id: dns\nfilter agent_ip in $dns_servers | comp count_distinct(_time) as n by agent_ip "
                    "| filter n < 7\n")
    config = tmp_path / "c.toml"
    config.write_text(f'rules = ["{rule}"]\n')
    done = cli("replay", "--config", config, "--db", tmp_path / "s.db", PCAPS / "family" / "benign-printing.pcap")
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert f"{rule}: line 2, column 20: unknown address group $dns_servers" in done.stderr


def test_hunt_xql_reads_the_configurations_groups_on_sqlite(tmp_path):
    """The shipped PrinterBug rule over a replayed store: benign-printing's registration is in
    the rows without groups and out of them with the lab's print server declared."""
    db = tmp_path / "s.db"
    assert cli("replay", "--db", db, PCAPS / "family" / "benign-printing.pcap").returncode == 0
    rule = ROOT / "sensor" / "rules" / "family" / "rprn.xql"
    plain = cli("hunt", "--db", db, "--xql", rule, "--format", "json")
    assert plain.returncode == 0, plain.stderr
    assert [r["listener_host"] for r in map(json.loads, plain.stdout.splitlines())] == ["10.0.0.5"]
    config = tmp_path / "c.toml"
    config.write_text('[address_groups]\nprint_servers = ["DC01"]\n')
    declared = cli("hunt", "--db", db, "--config", config, "--xql", rule, "--format", "json")
    assert declared.returncode == 0 and declared.stdout.strip() in ("", "[]"), declared.stderr
