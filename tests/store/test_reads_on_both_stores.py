"""Issue 16, item 2: the read commands (`hunt`, `hunt --xql`, `alerts`, `events`) give the same
output on a SQLite store and on a real PostgreSQL holding the same replay: every lab capture
(the DFSCoerce variants and the coercion family) plus day-shifted copies, so that day counts
are above one. The XQL compiler writes SQLite's SQL for one and PostgreSQL's for the other
(sensor/xql/dialects.py); the shipped rule files, the README's hunts and queries that use
every XQL function and stage run on both."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from sensor.cli import main
from tests.conftest import PCAPS, ROOT
from workload import repeated

RULE_FILES = sorted((ROOT / "sensor" / "rules").rglob("*.xql"))
# The README's hunts ("XQL: rules are queries"), then queries that use every function, the
# stages and the aggregates on the replayed events. Those without `sort` are compared as
# sets of rows: XQL leaves their order to the engine.
QUERIES = [
    "filter action_rpc_func_opnum in (12, 13) | comp count() as calls, values(agent_hostname) as dcs "
    "by actor_remote_ip | sort desc calls",
    "filter action_rpc_func_opnum = 13 | comp count() by agent_hostname",
    'alter d = format_timestamp("%Y-%m-%d %H:%M:%S (%j %a %b)", _time), w = extract_time(_time, "DAYOFWEEK"), '
    'ms = extract_time(_time, "MILLISECOND"), y = extract_time(_time, "dayofyear"), '
    'h = extract_time(_time, lowercase("Hour")), bad = extract_time(_time, agent_hostname) '
    "| fields d, w, ms, y, h, bad, event_id | sort asc event_id",
    'alter s = split(actor_remote_ip, "."), f = arrayindex(split(actor_remote_ip, "."), -1), '
    'u = uppercase(agent_hostname), l = lowercase(action_rpc_func_name), t = trim(net_smb_user), '
    'c = concat(agent_hostname, ":", agent_port), r = replace(action_rpc_interface_uuid, "-", ""), '
    'tr = trim(action_rpc_interface_uuid, "{}") | fields s, f, u, l, t, c, r, tr, event_id | sort asc event_id',
    'filter action_rpc_func_name contains "dfs" | comp count_distinct(actor_remote_ip) as n, min(_time) as first, '
    "max(_time) as last, earliest(event_id) as e, latest(event_id) as l, sum(action_rpc_func_opnum) as s, "
    "avg(action_rpc_func_opnum) as a, min(agent_hostname) as lo, max(net_smb_user) as hi "
    "by action_rpc_interface_name",
    'filter agent_hostname in ("dc*", "*01") and action_rpc_func_name ~= "Std[A-Z]" '
    "| fields event_id, agent_hostname | sort desc event_id | limit 3",
    'alter x = to_integer(json_extract_scalar(action_rpc_func_str_call_fields, "$.Flags")), '
    'j = json_extract(action_rpc_func_str_call_fields, "$.ServerName"), big = action_rpc_func_opnum > 12, '
    'n = if(net_encrypted = 1, "enc", "clear"), '
    'k = coalesce(json_extract_scalar(action_rpc_func_str_call_fields, "$.ServerName"), agent_ip), '
    'i = to_integer(" 42 "), no = to_integer(agent_hostname) '
    "| fields x, j, big, n, k, i, no, net_encrypted, event_id | sort asc event_id",
    "dedup actor_remote_ip | fields actor_remote_ip, event_id | sort asc actor_remote_ip",
    "dedup agent_hostname by desc _time | fields agent_hostname, event_id | sort asc agent_hostname",
    'alter td = timestamp_diff(_time, event_timestamp, "SECOND"), sealed = net_stub_sealed '
    "| filter sealed = 1 or td != 0 | fields event_id, sealed, td",
    'config case_sensitive = true | filter agent_hostname = "dc01" | comp count() as n',
    'filter agent_hostname = "dc01" and action_rpc_func_name not contains "ADD" | comp count() as n',
    'filter actor_remote_ip not in ("10.0.0.66", null) and agent_hostname != "x" | fields event_id, actor_remote_ip',
    'alter h = arrayindex(regextract(lowercase(coalesce(json_extract_scalar(action_rpc_func_str_call_fields, '
    '"$.ServerName"), json_extract_scalar(action_rpc_func_str_call_fields, "$.FileName"))), "([0-9]+)"), 0) '
    "| comp values(h) as hs, count() as n by action_rpc_interface_name",
    "fields agent_hostname, sensor, net_smb_dialect, net_rpc_auth_level "
    "| sort asc net_rpc_auth_level, desc net_smb_dialect, asc agent_hostname | limit 20",
    "filter action_rpc_func_opnum >= 12 and action_rpc_func_opnum < 16 | comp count() as n by action_rpc_func_opnum "
    "| sort desc n, asc action_rpc_func_opnum",
    # Text as a truth value: its leading number (an address-named server is true, a name false).
    "filter agent_hostname | fields event_id, agent_hostname",
    'alter t = concat(" .5e1x", agent_hostname), z = concat("0", agent_hostname) | filter t and not z '
    "| comp count() as n",
]


def cli(*args: str, stdin: str | None = None):
    """The command in this process (a subprocess per read would spend most of the test
    importing): exit code, stdout and stderr apart."""
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


@pytest.fixture(scope="module")
def stores(postgres, tmp_path_factory) -> tuple[str, str]:
    """(SQLite path, PostgreSQL URL), each holding the same replay."""
    tmp = tmp_path_factory.mktemp("reads")
    captures = sorted(PCAPS.glob("*.pcap")) + sorted((PCAPS / "family").glob("*.pcap")) + [
        repeated(PCAPS / "dfscoerce-smb21.pcap", tmp / "dfs-days.pcap", 4, days=4, shift_days=2),
        repeated(PCAPS / "family" / "efsr-efsrpc-smb21.pcap", tmp / "efsr-days.pcap", 3, days=3, shift_days=1),
    ]
    targets = (str(tmp / "sensor.db"), postgres.create_database("reads_both"))
    for target in targets:
        done = subprocess.run([sys.executable, "-m", "sensor.cli", "replay", "--db", target, "--alerts", "/dev/null",
                               *map(str, captures)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return targets


def same_output(stores, *args: str, stdin: str | None = None, ordered: bool = True) -> str:
    lite, fleet = (cli(*args, "--db", target, stdin=stdin) for target in stores)
    assert lite.exit_code == 0, lite.stderr
    assert fleet.exit_code == 0, fleet.stderr
    if ordered:
        assert fleet.stdout == lite.stdout
    else:
        assert sorted(fleet.stdout.splitlines()) == sorted(lite.stdout.splitlines())
    return lite.stdout


@pytest.mark.parametrize("rule", RULE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
@pytest.mark.parametrize("day_mode", [[], ["--day-mode", "utc-date"]], ids=["as-written", "utc-date"])
def test_shipped_rules_hunt_alike(stores, rule, day_mode):
    out = same_output(stores, "hunt", "--xql", str(rule), *day_mode, "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    if rule.parent.name == "dfscoerce":
        # The day-shifted copies: one key seen on 4 days (5 with the capture's own day).
        assert max(row["day_count_dfrpc_src_dst_func"] for row in rows) >= 4
    same_output(stores, "hunt", "--xql", str(rule), *day_mode)           # the table too


@pytest.mark.parametrize("query", QUERIES)
def test_xql_queries_give_the_same_rows(stores, query):
    out = same_output(stores, "hunt", "--xql", "-", "--format", "json", stdin=query, ordered="sort" in query)
    assert out.strip(), "the query found nothing: it compares nothing"


@pytest.mark.parametrize("options", [
    [], ["--match", "seed-exact", "--day-mode", "day-of-month"], ["--threshold", "3", "--lookback-days", "2"],
    ["--until", "2026-11-30"],
], ids=["default", "seed-exact-day-of-month", "threshold-lookback", "until"])
def test_hunt_alike(stores, options):
    same_output(stores, "hunt", *options, "--format", "json")


@pytest.mark.parametrize("command", [
    ["alerts", "--limit", "1000"], ["alerts", "--rule", "dfscoerce-rare-dfsnm-root-call"],
    ["alerts", "--client", "10.0.0.0/24", "--opnum", "13"], ["alerts", "--since", "2026-11-29"],
    ["events", "--limit", "1000"], ["events", "--server", "DC01", "--opnum", "13", "--limit", "5"],
    ["events", "--client", "10.0.0.66", "--until", "2026-11-30"],
], ids=" ".join)
def test_listings_alike(stores, command):
    assert same_output(stores, *command, "--format", "json").strip()
    same_output(stores, *command)


def test_a_query_postgresql_cannot_run_is_one_line_and_exit_2(stores):
    done = cli("hunt", "--db", stores[1], "--xql", "-", stdin='alter t = format_timestamp("%Z", _time)')
    assert done.exit_code == 2
    assert done.stderr.strip().splitlines() == [
        "dfs-sensor: error: -: format_timestamp() on PostgreSQL: %Z is not supported "
        "(supported: %Y %m %d %H %M %S %j %y %b %B %a %A %p %I)"]
