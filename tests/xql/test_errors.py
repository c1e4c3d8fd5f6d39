"""Bad queries and bad rule files: one line naming line, column and what was expected; exit 2,
never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sensor.xql.check import check
from sensor.xql.parser import XqlError, parse
from sensor.xql.rules import RuleError, load_rule, load_rules, parse_rule, rarity_plan

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, line, column, words", [
    ("dataset = xdr_data\n| filtr event_type = 22", 2, 3, ["unknown stage 'filtr'", "did you mean 'filter'"]),
    ("dataset = xdr_data\n| filter agent_hostnme = \"DC01\"", 2, 10, ["unknown field 'agent_hostnme'",
                                                                    "did you mean 'agent_hostname'"]),
    ("alter d = extract_time(_time)", 1, 11, ["extract_time() takes 2 arguments, not 1"]),
    ("alter d = lowercse(agent_id)", 1, 11, ["unknown function 'lowercse'", "did you mean 'lowercase'"]),
    ('filter agent_hostname = "DC01\n| limit 3', 1, 25, ["unterminated string"]),
    ("comp count_distinc(agent_id) by agent_hostname", 1, 6, ["unknown comp function", "count_distinct"]),
    ("filter event_type = 22 and", 1, 27, ["ends too early"]),
    ("comp count() as n by agent_id | filter agent_hostname = 1", 1, 40, ["unknown field 'agent_hostname'"]),
    ('filter agent_id ~= "(unclosed"', 1, 20, ["not a regular expression"]),
    ('alter d = extract_time(_time, "FORTNIGHT")', 1, 31, ["extract_time part 'FORTNIGHT'", "DAYOFWEEK"]),
    ("dataset = endpoints", 1, 1, ["unknown dataset 'endpoints'", "xdr_data"]),
])
def test_bad_query_names_line_column_and_expectation(text, line, column, words):
    with pytest.raises(XqlError) as caught:
        check(parse(text))
    assert (caught.value.line, caught.value.column) == (line, column)
    assert all(w in str(caught.value) for w in words), str(caught.value)


@pytest.mark.parametrize("query, why", [
    ("filter event_type = 22 | comp count() as n by agent_id | filter n < 7", "count_distinct"),
    ("alter d = extract_time(_time, \"HOUR\") | comp count_distinct(d) as n by agent_id | filter n < 7",
     "changes within a UTC day"),
    ("comp count_distinct(agent_ip) as n by agent_id | filter n < 7", "must depend on _time only"),
    ("sort asc _time | alter d = extract_time(_time, \"DAY\") | comp count_distinct(d) as n by agent_id "
     "| filter n < 7", "sort before comp"),
    ("alter d = extract_time(_time, \"DAY\") | comp count_distinct(d) as n by agent_id | filter n > 7",
     "filter n < K"),
])
def test_streaming_rule_of_the_wrong_shape_is_refused_with_why(query, why):
    rule = parse_rule("// id: r\n" + query, "r.xql")
    with pytest.raises(RuleError) as caught:
        rarity_plan(rule)
    assert why in str(caught.value) and "r.xql:" in str(caught.value) and "hunt --xql" in str(caught.value)


def test_the_shipped_rules_stream():
    shipped = load_rules([ROOT / "sensor" / "rules"]) + [load_rule(p) for p in
                                                          (ROOT / "sensor" / "rules" / "dfscoerce").glob("*.xql")]
    assert len(shipped) >= 2
    for rule in shipped:
        assert rarity_plan(rule).threshold == 7


def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "sensor.cli", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_hunt_xql_bad_query_exits_2_with_one_line(tmp_path):
    done = run_cli("hunt", "--db", str(tmp_path / "s.db"), "--xql", "-", stdin="dataset = xdr_data\n| filtr x = 1\n")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dfs-sensor: error: <stdin>: line 2, column 3: unknown stage 'filtr'; did you mean 'filter'? "
        "(stages: dataset, config, filter, alter, fields, comp, sort, limit, dedup)"]


def test_a_rules_directory_with_one_bad_file_refuses_to_start_and_names_it(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.xql").write_text("// id: good\nalter d = extract_time(_time, \"DAY\") "
                                    "| comp count_distinct(d) as n by agent_id | filter n < 3\n")
    (rules / "bad.xql").write_text("// id: bad\nfilter event_type = 22 | comp count() as n by agent_id\n")
    capture = ROOT / "pcaps" / "dfscoerce-smb21.pcap"
    done = run_cli("replay", "--db", str(tmp_path / "s.db"), "--rules", str(rules), str(capture))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(rules / "bad.xql") in done.stderr and "not a streaming rule" in done.stderr
    (rules / "bad.xql").unlink()
    done = run_cli("replay", "--db", str(tmp_path / "s.db"), "--rules", str(rules), str(capture))
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["rule"]["id"] == "good" for line in done.stdout.splitlines()} == {True, False}


def test_a_user_rule_reusing_a_shipped_rule_id_is_refused_naming_both(tmp_path):
    (tmp_path / "mine.xql").write_text("// id: dfscoerce-rare-dfsnm-root-call\nalter d = extract_time(_time, \"DAY\") "
                                       "| comp count_distinct(d) as n by agent_id | filter n < 3\n")
    capture = ROOT / "pcaps" / "dfscoerce-smb21.pcap"
    done = run_cli("replay", "--db", str(tmp_path / "s.db"), "--rules", str(tmp_path), str(capture))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(tmp_path / "mine.xql") in done.stderr and "opnum-12-13.xql" in done.stderr
    assert "already used" in done.stderr
