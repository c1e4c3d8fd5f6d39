"""lark's parse tree of an XQL query -> ast nodes (sensor/xql/ast.py). Every node keeps the
position of its first token. Imported by the parser only when it parses with lark (a shipped
rule's nodes are prebuilt at install time from this module's output: sensor/xql/prebuilt.py)."""
from __future__ import annotations

from lark import Token, Transformer, v_args

from sensor.xql import ast


def _pos(item) -> ast.Pos:
    """Where a token or a rule's meta starts."""
    return ast.Pos(item.line, item.column)


def _string(token: Token) -> str:
    text = str(token)
    return text[3:-3] if text.startswith('"""') else text[1:-1]


@v_args(meta=True)
class ToAst(Transformer):
    """Parse tree -> ast nodes."""

    # -- stages
    def dataset(self, meta, c):
        return ast.Dataset(str(c[0]), _pos(meta))

    def config(self, meta, c):
        return ast.Config(str(c[0]).lower(), str(c[1]).lower() == "true", _pos(meta))

    def filter(self, meta, c):
        return ast.Filter(c[0], _pos(meta))

    def alter(self, meta, c):
        return ast.Alter(tuple(c), _pos(meta))

    def assignment(self, meta, c):
        return (str(c[0]), c[1], _pos(c[0]))

    def fields(self, meta, c):
        return ast.Fields(tuple(c), _pos(meta))

    def field_item(self, meta, c):
        return (str(c[0]), str(c[1]) if len(c) > 1 and c[1] is not None else None, _pos(c[0]))

    def comp(self, meta, c):
        aggregates = tuple(x for x in c if isinstance(x, ast.Aggregate))
        by = tuple((str(t), _pos(t)) for t in c if isinstance(t, Token))
        return ast.Comp(aggregates, by, _pos(meta))

    def aggregate(self, meta, c):
        function, field, alias = c[0], c[1], c[2] if len(c) > 2 else None
        name = str(function).lower()
        default_alias = f"{name}_{field}" if field is not None else name
        return ast.Aggregate(name, None if field is None else str(field),
                             str(alias) if alias is not None else default_alias, _pos(function))

    def sort(self, meta, c):
        return ast.Sort(tuple(c), _pos(meta))

    def order(self, meta, c):
        direction, name = c
        return (str(name), direction is not None and direction.type == "DESC", _pos(name))

    def limit(self, meta, c):
        return ast.Limit(int(c[0]), _pos(meta))

    def dedup(self, meta, c):
        tokens = list(c)
        by = None
        if len(tokens) >= 2 and tokens[-2] is not None and getattr(tokens[-2], "type", "") in ("ASC", "DESC"):
            by = (str(tokens[-1]), tokens[-2].type == "DESC", _pos(tokens[-1]))
            tokens = tokens[:-2]
        return ast.Dedup(tuple((str(t), _pos(t)) for t in tokens if t is not None), by, _pos(meta))

    # -- expressions
    def or_(self, meta, c):
        return c[0] if len(c) == 1 else ast.Bool("or", tuple(c), _pos(meta))

    def and_(self, meta, c):
        return c[0] if len(c) == 1 else ast.Bool("and", tuple(c), _pos(meta))

    def not_(self, meta, c):
        return ast.Not(c[0], _pos(meta))

    def compare(self, meta, c):
        return ast.Compare(str(c[1]), c[0], c[2], _pos(c[1]))

    def regex(self, meta, c):
        return ast.Regex(c[0], c[1], _pos(meta))

    def contains(self, meta, c):
        return ast.Contains(c[0], c[1], False, _pos(meta))

    def not_contains(self, meta, c):
        return ast.Contains(c[0], c[1], True, _pos(meta))

    def in_(self, meta, c):
        return ast.In(c[0], tuple(c[1:]), False, _pos(meta))

    def not_in(self, meta, c):
        return ast.In(c[0], tuple(c[1:]), True, _pos(meta))

    def in_group(self, meta, c):
        return ast.InGroup(c[0], str(c[1])[1:], None, False, _pos(c[1]))

    def not_in_group(self, meta, c):
        return ast.InGroup(c[0], str(c[1])[1:], None, True, _pos(c[1]))

    def call(self, meta, c):
        args = tuple(a for a in c[1:] if a is not None) if not (len(c) == 2 and c[1] is None) else ()
        return ast.Call(str(c[0]).lower(), args, _pos(c[0]))

    def enum(self, meta, c):
        return ast.Call("enum", (ast.Literal(str(c[0]), _pos(c[0])),), _pos(meta))

    def field(self, meta, c):
        return ast.Field(str(c[0]), _pos(c[0]))

    def string(self, meta, c):
        return ast.Literal(_string(c[0]), _pos(c[0]))

    def number(self, meta, c):
        text = str(c[0])
        return ast.Literal(float(text) if "." in text else int(text), _pos(c[0]))

    def boolean(self, meta, c):
        return ast.Literal(str(c[0]).lower() == "true", _pos(c[0]))

    def null(self, meta, c):
        return ast.Literal(None, _pos(c[0]))
