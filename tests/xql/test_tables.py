"""The XQL parser's tables built at install time (sensor/xql/tables.py): the parser they give
is the grammar's, they are used only when built from this grammar with this lark, and the
install builds them."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import lark
import pytest

from sensor.xql import parser, tables
from sensor.xql.rules import SHIPPED_RULES

XQL = Path(parser.__file__).parent
GRAMMAR = (XQL / tables.GRAMMAR_FILE).read_text(encoding="utf-8")
CI = os.environ.get("CI") == "true"
# Queries that parse and queries that do not, at each kind of place a syntax error can be.
QUERIES = [path.read_text(encoding="utf-8") for path in sorted(SHIPPED_RULES.rglob("*.xql"))] + [
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


def outcome(make_parser, text: str):
    """What parsing ``text`` gives: its ast nodes (positions included), or its error's type,
    place and expectations."""
    try:
        return parser._Build().transform(make_parser().parse(text))
    except lark.exceptions.VisitError as e:
        return str(e.orig_exc)
    except lark.exceptions.UnexpectedInput as e:
        return type(e).__name__, e.line, e.column, sorted(getattr(e, "expected", None) or ()), \
            sorted(getattr(e, "allowed", None) or ())


@pytest.fixture(scope="module")
def built_tables(tmp_path_factory) -> str:
    """A package of its own holding the grammar and tables written by write_tables."""
    root = tmp_path_factory.mktemp("tables")
    package = root / "xqltables_under_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / tables.GRAMMAR_FILE).write_text(GRAMMAR, encoding="utf-8")
    tables.write_tables(str(package))
    sys.path.insert(0, str(root))
    yield package.name
    sys.path.remove(str(root))


@pytest.mark.parametrize("text", QUERIES)
def test_the_parser_from_the_tables_is_the_grammars(built_tables, text):
    loaded = tables.load(GRAMMAR, built_tables)
    assert loaded is not None
    assert outcome(lambda: loaded, text) == outcome(lambda: tables.build(GRAMMAR), text)


def test_tables_of_another_grammar_or_lark_are_not_used(built_tables, monkeypatch):
    assert tables.load(GRAMMAR + "\n// an edit\n", built_tables) is None
    monkeypatch.setattr(lark, "__version__", lark.__version__ + ".post1")
    assert tables.load(GRAMMAR, built_tables) is None


def test_missing_tables_build_the_parser_from_the_grammar():
    assert tables.load(GRAMMAR, "sensor.xql.no_such_package") is None


def test_this_install_built_its_tables():
    """scripts/setup (pip's build) writes them beside the grammar; stale or missing ones would
    cost every start the LALR build again. A checkout edited since: run scripts/setup."""
    if not CI and not (XQL / (tables.TABLES_MODULE + ".py")).exists():
        pytest.skip("installed without setup.py's build step (not CI): the parser is built at each start")
    assert tables.load(GRAMMAR, "sensor.xql") is not None, "stale or missing: run scripts/setup"
