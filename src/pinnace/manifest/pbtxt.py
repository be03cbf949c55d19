"""A small reader for protobuf *text format*, enough for Triton's ``config.pbtxt``.

It needs no schema: every message becomes a dict from field name to the *list* of values given
for it (text format writes singular and repeated fields alike), values being ``str`` (strings
and enum names), ``int``, ``float``, ``bool`` or nested messages. The caller, which knows the
schema, decides what each field means — and can name every field it does not understand,
which a schema-driven parser would reject or silently keep.

Supported syntax: ``name: value``, ``name { … }``, ``name: { … }``, ``name < … >``,
``name: [v, v]``, ``name [ {…}, {…} ]``, ``#`` comments, ``,``/``;`` separators, single- and
double-quoted strings with C escapes (adjacent strings join), decimal/hex/float numbers,
``inf``/``nan``, ``true``/``false``.
"""

from __future__ import annotations

import re
from typing import Any, Final

Message = dict[str, list[Any]]

_TOKEN: Final = re.compile(
    r"""
    (?P<space>[\s]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[-]?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}\[\]<>:,;])
    """,
    re.VERBOSE,
)
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b",
                   "f": "\f", "v": "\v", "?": "?"}
_CLOSE: Final = {"{": "}", "<": ">"}


class PbtxtError(ValueError):
    """Malformed text format; the message gives the line and what was expected."""


def parse(text: str) -> Message:
    """Parse a whole text-format message."""
    parser = _Parser(text)
    return parser.message(end=None)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str, int]] = []
        line = 1
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise PbtxtError(f"line {line}: unexpected character {text[pos]!r}")
            kind = match.lastgroup or ""
            value = match.group(0)
            if kind != "space":
                self.tokens.append((kind, value, line))
            line += value.count("\n")
            pos = match.end()
        self.index = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise PbtxtError("unexpected end of file")
        self.index += 1
        return token

    def expect(self, value: str) -> None:
        _kind, text, line = self.take()
        if text != value:
            raise PbtxtError(f"line {line}: expected {value!r}, found {text!r}")

    def message(self, end: str | None, opened: int = 0) -> Message:
        fields: Message = {}
        while True:
            token = self.peek()
            if token is None:
                if end is not None:
                    raise PbtxtError(f"line {opened}: this message is never closed with {end!r}")
                return fields
            kind, text, line = token
            if end is not None and text == end:
                self.index += 1
                return fields
            if kind != "ident":
                raise PbtxtError(f"line {line}: expected a field name, found {text!r}")
            self.index += 1
            fields.setdefault(text, []).extend(self.field_values())
            separator = self.peek()
            if separator is not None and separator[1] in (",", ";"):
                self.index += 1

    def field_values(self) -> list[Any]:
        _kind, text, line = self.take()
        if text in _CLOSE:
            return [self.message(_CLOSE[text], line)]
        if text == "[":  # a list of messages may omit the colon
            return self.list_values()
        if text != ":":
            raise PbtxtError(f"line {line}: expected ':' or '{{' after a field name, found {text!r}")
        _kind, text, line = self.peek() or ("", "", line)
        if text == "[":
            self.index += 1
            return self.list_values()
        return [self.value()]

    def list_values(self) -> list[Any]:
        values: list[Any] = []
        while True:
            token = self.peek()
            if token is None:
                raise PbtxtError("a list is never closed with ']'")
            if token[1] == "]":
                self.index += 1
                return values
            values.append(self.value())
            token = self.peek()
            if token is not None and token[1] == ",":
                self.index += 1

    def value(self) -> Any:
        kind, text, line = self.take()
        if text in _CLOSE:
            return self.message(_CLOSE[text], line)
        if kind == "string":
            parts = [_unquote(text, line)]
            while (nxt := self.peek()) is not None and nxt[0] == "string":
                parts.append(_unquote(self.take()[1], nxt[2]))
            return "".join(parts)
        if kind == "number":
            return _number(text)
        if kind == "ident":
            lowered = text.lower()
            if lowered in ("true", "t"):
                return True
            if lowered in ("false", "f"):
                return False
            if lowered in ("inf", "infinity", "-inf", "-infinity", "nan"):
                return float(lowered)
            return text
        raise PbtxtError(f"line {line}: expected a value, found {text!r}")


def _number(text: str) -> int | float:
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?\d+", body):
        return int(body)
    return float(body)


def _unquote(token: str, line: int) -> str:
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise PbtxtError(f"line {line}: a string ends in a backslash")
        esc = body[i]
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 1
        elif esc in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 1 :])
            if digits is None:
                raise PbtxtError(f"line {line}: bad \\x escape")
            out.append(chr(int(digits.group(0), 16)))
            i += 1 + len(digits.group(0))
        elif esc.isdigit():
            digits = re.match(r"[0-7]{1,3}", body[i:])
            assert digits is not None
            out.append(chr(int(digits.group(0), 8)))
            i += len(digits.group(0))
        else:
            raise PbtxtError(f"line {line}: unknown escape \\{esc}")
    return "".join(out)
