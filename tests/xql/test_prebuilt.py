"""The XQL front end prebuilt at install time (sensor/xql/prebuilt.py): lark's tables give the
grammar's parser, the prebuilt queries are the shipped rules' own parse, each is used only
when made from the files and lark of this install, and the install makes them."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import lark
import pytest

from sensor.xql import parser, prebuilt
from sensor.xql.rules import SHIPPED_RULES
from sensor.xql.transform import ToAst

XQL = Path(parser.__file__).parent
GRAMMAR = (XQL / prebuilt.GRAMMAR_FILE).read_text(encoding="utf-8")
CI = os.environ.get("CI") == "true"
SHIPPED = [path.read_text(encoding="utf-8") for path in sorted(SHIPPED_RULES.rglob("*.xql"))]
# Queries that parse and queries that do not, at each kind of place a syntax error can be.
QUERIES = SHIPPED + [
    'dataset = xdr_data | filter agent_hostname in ("a", "b") and not action_rpc_func_opnum in (12, 13)',
    'filter x ~= "a.*" or y contains "z" | comp count() as n, min(_time) by a, b | sort desc n | limit 5',
    'dedup agent_id, agent_ip by desc _time | fields agent_id as a, agent_ip | filter a in $print_servers',
    'config case_sensitive = false | alter d = format_timestamp("%Y", _time) | filter d != null',
    'filter x = -1.5 | filter y not contains """multi\nline"""',
    "dataset = xdr_data\n| filtr event_type = 22",
    'filter agent_hostname = "DC01\n| limit 3',
    "filter event_type = 22 and",
    "comp count( by x",
    "filter a = 1 |",
    "| limit 3",
    "limit 3 4",
    "filter a @ 1",
]


def outcome(lark_parser, text: str):
    """What parsing ``text`` gives: its ast nodes (positions included), or its error's type,
    place and expectations."""
    try:
        return ToAst().transform(lark_parser.parse(text))
    except lark.exceptions.VisitError as e:
        return str(e.orig_exc)
    except lark.exceptions.UnexpectedInput as e:
        return type(e).__name__, e.line, e.column, sorted(getattr(e, "expected", None) or ()), \
            sorted(getattr(e, "allowed", None) or ())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """prebuilt_data written by ``write`` into a directory of its own (with the grammar and the
    node sources, as setup.py's build has them), imported from there."""
    directory = tmp_path_factory.mktemp("prebuilt")
    for name in prebuilt.NODE_SOURCES:
        (directory / name).write_text((XQL / name).read_text(encoding="utf-8"), encoding="utf-8")
    path = prebuilt.write(str(directory))
    spec = importlib.util.spec_from_file_location("prebuilt_data_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def using(written, monkeypatch):
    monkeypatch.setattr(prebuilt, "_data", lambda: written)
    return written


@pytest.mark.parametrize("text", QUERIES)
def test_the_parser_from_the_tables_is_the_grammars(using, text):
    assert outcome(prebuilt.lark_parser(GRAMMAR), text) == outcome(lark.Lark(GRAMMAR, **prebuilt.OPTIONS), text)


def test_every_shipped_rule_is_prebuilt_as_lark_parses_it(using):
    assert sorted(using.QUERIES) == sorted(SHIPPED)
    for text in SHIPPED:
        query = prebuilt.shipped_query(text)
        assert query is not None and query == parser.parse_with_lark(text)
        assert parser.parse(text) is query
    assert prebuilt.shipped_query(SHIPPED[0] + "\n") is None      # any other text goes to lark


def test_prebuilt_data_of_other_sources_or_another_lark_is_not_used(using, monkeypatch):
    assert prebuilt.lark_parser(GRAMMAR).source_path == "<deserialized>"       # loaded from the tables
    assert prebuilt.lark_parser(GRAMMAR + "\n// an edit\n").source_path != "<deserialized>"   # built
    assert prebuilt.tables_key(GRAMMAR, lark.__version__) == using.TABLES_KEY
    assert prebuilt.tables_key(GRAMMAR, lark.__version__ + ".post1") != using.TABLES_KEY
    assert prebuilt.tables_key(GRAMMAR + " ", lark.__version__) != using.TABLES_KEY
    monkeypatch.setattr(prebuilt, "queries_key", lambda: "ast.py or transform.py edited since")
    assert prebuilt.shipped_query(SHIPPED[0]) is None
    assert parser.parse(SHIPPED[0]) == parser.parse_with_lark(SHIPPED[0])


def test_without_prebuilt_data_everything_is_built_at_run_time(monkeypatch):
    monkeypatch.setattr(prebuilt, "_data", lambda: None)
    assert prebuilt.shipped_query(SHIPPED[0]) is None
    assert parser.parse(SHIPPED[0]) == parser.parse_with_lark(SHIPPED[0])


def test_this_install_prebuilt_its_xql():
    """scripts/setup (pip's build) writes it beside the grammar; stale or missing, every start
    would parse the rules with lark again (correct, slower). CI installs afresh, so there it
    must be current; a checkout edited since its install is told to run scripts/setup."""
    data = prebuilt._data()
    current = (data is not None and data.TABLES_KEY == prebuilt.tables_key(GRAMMAR, lark.__version__)
               and all(prebuilt.shipped_query(text) is not None for text in SHIPPED))
    if not CI and not current:
        pytest.skip("missing or stale prebuilt XQL (not CI): run scripts/setup")
    assert current, "missing or stale prebuilt XQL: setup.py's build step did not run"
