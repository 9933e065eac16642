"""`CallListState`: where one row's output stands, updated once per token.

The decoder's output is either a text answer or a JSON call list `[{"name": "...", "arguments": {...}}, ...]`.
Every rule that steers decoding (call naming, list continuation, the closing reserve, enumerations) needs to
know where the output is — in a call's name, in its arguments, between calls — and what the calls so far are.
`CallListState` is fed each token's text once and keeps that up to date in O(token length); nothing rescans
the output.

Bracket depths of a call list: 1 between calls, 2 in a call object, 3 in its arguments, 4+ in nested values.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_NAME_KEY = re.compile(r'\{\s*"name"\s*:\s*')
"""A call object's text up to the opening quote of its name (the grammar writes "name" first)."""


class JsonState:
    """Bracket depth and string state of partial JSON text, fed one character at a time."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, char: str) -> int:
        """Take one character; +1 when it opens an array or object, -1 when it closes one, 0 otherwise."""
        if self.in_string:
            self.escaped, self.in_string = (False, True) if self.escaped else (char == "\\", char != '"')
        elif char == '"':
            self.in_string = True
        elif char in "[{":
            self.depth += 1
            return 1
        elif char in "]}":
            self.depth -= 1
            return -1
        return 0


class CallListState:
    """The state of one row's output: fed each token's text (`feed`), read by the decoding rules."""

    def __init__(self) -> None:
        self.tokens = 0
        """Tokens fed so far."""
        self.is_call: bool | None = None
        """None before the first token; True when the first token opened a call list ("["), False for text."""
        self._json = JsonState()
        self._call_start = 0  # token index where the current call object opened
        self._arguments_closed = False  # the current call's arguments have closed
        self._longest = 0  # tokens of the longest completed call
        self._call_chars: list[str] = []  # the current call object's text, from its "{"
        self._last_structural = ""  # the last character outside strings that is not a space
        self._in_name = False
        self._name_chars: list[str] = []
        self.names: list[str] = []
        """The complete names of the calls so far, in order (the current call's once its name closed)."""
        self._calls: list[dict[str, Any]] | None = []  # completed calls; None once one did not parse

    # ----------------------------------------------------------------------------------- updates
    def feed(self, text: str) -> None:
        """Take one token's text."""
        if self.is_call is None:
            self.is_call = text.startswith("[")
        if self.is_call:
            for char in text:
                self._feed_char(char, self.tokens)
        self.tokens += 1

    def _feed_char(self, char: str, position: int) -> None:
        json = self._json
        if json.depth >= 2:
            self._call_chars.append(char)
        was_in_string = json.in_string
        change = json.feed(char)
        if was_in_string:
            if self._in_name:
                if char == "\\":  # an escaped name is not a tool's
                    self._in_name = False
                elif not json.in_string:
                    self.names.append("".join(self._name_chars))
                    self._in_name = False
                else:
                    self._name_chars.append(char)
            if not json.in_string:
                self._last_structural = '"'
            return
        if json.in_string:
            if json.depth == 2 and _NAME_KEY.fullmatch("".join(self._call_chars[:-1])):
                self._in_name, self._name_chars = True, []
        elif change > 0 and json.depth == 2:
            self._call_start, self._arguments_closed = position, False
            self._call_chars = [char]
        elif change < 0:
            self._arguments_closed = self._arguments_closed or json.depth == 2
            if json.depth == 1:
                self._longest = max(self._longest, position + 1 - self._call_start)
                self._close_call()
        if not char.isspace():
            self._last_structural = char

    def _close_call(self) -> None:
        if self._calls is None:
            return
        try:
            call = orjson.loads("".join(self._call_chars))
        except orjson.JSONDecodeError:  # e.g. a number with no 64-bit value
            call = None
        if isinstance(call, dict):
            self._calls.append(call)
        else:
            self._calls = None

    # ----------------------------------------------------------------------------------- reads
    @property
    def depth(self) -> int:
        return self._json.depth

    @property
    def in_string(self) -> bool:
        return self._json.in_string

    @property
    def longest_call(self) -> int:
        """Tokens of the longest call so far — the current one too once its arguments closed — or 0 while a
        call's arguments are open."""
        if self.depth == 2 and self._arguments_closed:
            return max(self._longest, self.tokens - self._call_start)
        return self._longest if self.depth == 1 or self._arguments_closed else 0

    @property
    def name_prefix(self) -> str | None:
        """The current call's name so far while the output is inside it; None elsewhere."""
        return "".join(self._name_chars) if self._in_name and self.in_string else None

    def list_step(self) -> int | None:
        """The bracket depth (1-3) where the list may go on or end (the grammar decides which tokens are
        allowed); None inside a string, a call's name or a nested value, and before the first call."""
        if not self.is_call or self.in_string:
            return None
        return self.depth if self.depth == 3 or (self.depth in (1, 2) and self.longest_call > 0) else None

    def list_full(self, remaining: int, reserve: int) -> bool:
        """True where the list can end and `remaining` tokens cannot hold another call as long as the longest so
        far plus `reserve`: the list should close rather than open a call it cannot finish."""
        longest = self.longest_call
        return bool(self.is_call) and not self.in_string and self.depth in (1, 2) and 0 < longest \
            and remaining < longest + reserve

    def calls_so_far(self) -> list[dict[str, Any]] | None:
        """The calls of the list cut here, the open call's complete values included, or None where the list
        cannot be cut (after a "," between calls, inside a value)."""
        if not self.is_call or self._calls is None or self.in_string or self.depth < 1:
            return None
        if self.depth == 1:
            return None if self._last_structural == "," else list(self._calls)
        try:
            current = orjson.loads("".join(self._call_chars) + "}" * (self.depth - 1))
        except orjson.JSONDecodeError:
            return None
        return [*self._calls, current] if isinstance(current, dict) else None
