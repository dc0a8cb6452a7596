"""``--where`` filters: a small expression language compiled to bound SQL.

    params.lr > 0.01 and metrics.acc >= 0.9
    tags.model = 'bert' or status != 'finished'
    params.`key with spaces.x` = 'a b'      (backticks: a flat key taken as is)
    name like '%lr=0.1%'

Fields: ``params.KEY``, ``metrics.NAME`` (the metric's last value), ``tags.KEY``,
and ``id``, ``name``, ``status``, ``experiment``, ``sweep_id``, ``job_num``,
``started_at``, ``ended_at``, ``duration``. Operators: ``= == != <> < <= > >=``,
``like``, ``is null``, ``is not null``; ``and``, ``or``, ``not`` and parentheses.
Values are numbers or quoted strings. Nothing from the expression is pasted into
SQL: keys and values become bound parameters, and a field not on the list above is
an error.
"""
from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Tuple

RUN_FIELDS = {
    "id": "r.id", "name": "r.name", "status": "r.status", "experiment": "e.name",
    "sweep_id": "r.sweep_id", "job_num": "r.job_num", "started_at": "r.started_at",
    "ended_at": "r.ended_at", "duration": "(r.ended_at - r.started_at)",
}
OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=",
             ">": ">", ">=": ">=", "like": "LIKE"}

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
    | (?P<str>'(?:[^']|'')*'|"(?:[^"\\]|\\.)*")
    | (?P<op><=|>=|==|!=|<>|=|<|>)
    | (?P<paren>[()])
    | (?P<field>(?:params|metrics|tags)\.(?:`[^`]+`|[^\s()<>=!]+)|[A-Za-z_]\w*)
    )""", re.VERBOSE)


class WhereError(ValueError):
    """The filter does not parse; the message says where."""


def compile_where(text: str) -> Tuple[str, List[Any]]:
    """SQL (over ``runs r JOIN experiments e``) and its bound arguments."""
    tokens = _tokenize(text)
    parser = _Parser(tokens, text)
    sql = parser.expression()
    if parser.pos != len(tokens):
        raise WhereError(f"unexpected {tokens[parser.pos][1]!r} in --where {text!r}")
    return sql, parser.args


def _tokenize(text: str) -> List[Tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise WhereError(f"cannot read --where at {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: List[Tuple[str, str]], text: str):
        self.tokens, self.text, self.pos = tokens, text, 0
        self.args: List[Any] = []

    def peek(self) -> Tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "")

    def word(self, *words: str) -> bool:
        kind, value = self.peek()
        if kind == "field" and value.lower() in words:
            self.pos += 1
            return True
        return False

    def expression(self) -> str:
        parts = [self.conjunction()]
        while self.word("or"):
            parts.append(self.conjunction())
        return " OR ".join(parts) if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def conjunction(self) -> str:
        parts = [self.term()]
        while self.word("and"):
            parts.append(self.term())
        return " AND ".join(parts) if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def term(self) -> str:
        if self.word("not"):
            return f"NOT ({self.term()})"
        if self.peek() == ("paren", "("):
            self.pos += 1
            inner = self.expression()
            if self.peek() != ("paren", ")"):
                raise WhereError(f"missing ')' in --where {self.text!r}")
            self.pos += 1
            return f"({inner})"
        return self.comparison()

    def comparison(self) -> str:
        kind, field = self.peek()
        if kind != "field":
            raise WhereError(f"expected a field such as params.lr, got {field!r}")
        self.pos += 1
        column, exists = self.column(field)
        if self.word("is"):
            negate = self.word("not")
            if not self.word("null"):
                raise WhereError("expected NULL after IS")
            test = f"{column} IS {'NOT ' if negate else ''}NULL"
            if exists:
                return f"EXISTS ({exists} AND {test})" if negate else \
                    f"NOT EXISTS ({exists} AND {column} IS NOT NULL)"
            return test
        kind, op = self.peek()
        if kind == "op" or (kind == "field" and op.lower() == "like"):
            self.pos += 1
        else:
            raise WhereError(f"expected an operator after {field}, got {op!r}")
        value = self.value()
        self.args.append(value)
        test = f"{column} {OPERATORS[op.lower()]} ?"
        return f"EXISTS ({exists} AND {test})" if exists else test

    def column(self, field: str) -> Tuple[str, str]:
        if "." in field and field.split(".", 1)[0] in ("params", "metrics", "tags"):
            table, key = field.split(".", 1)
            key = key[1:-1] if key.startswith("`") else key
            if table == "params":
                self.args.append(key)
                return "p.value", "SELECT 1 FROM params p WHERE p.run_key = r.key AND p.key = ?"
            if table == "tags":
                self.args.append(key)
                return "t.value", "SELECT 1 FROM tags t WHERE t.run_key = r.key AND t.key = ?"
            self.args.append(key)
            return ("s.last_value",
                    "SELECT 1 FROM series s WHERE s.run_key = r.key AND s.name = ?"
                    " AND s.context = ''")
        if field.lower() in RUN_FIELDS:
            return RUN_FIELDS[field.lower()], ""
        raise WhereError(f"unknown field {field!r} in --where; use params.KEY, "
                         f"metrics.NAME, tags.KEY or one of {', '.join(RUN_FIELDS)}")

    def value(self) -> Any:
        kind, text = self.peek()
        self.pos += 1
        if kind == "num":
            number = float(text)
            return int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", text) \
                else number
        if kind == "str":
            if text[0] == "'":
                return text[1:-1].replace("''", "'")
            return bytes(text[1:-1], "utf-8").decode("unicode_escape")
        if kind == "field" and text.lower() in ("true", "false"):
            return 1 if text.lower() == "true" else 0
        hint = f" (quote text: '{text}')" if kind == "field" else ""
        got = repr(text) if text else "the end"
        raise WhereError(f"expected a number or a quoted string, got {got}{hint} in "
                         f"--where {self.text!r}")
