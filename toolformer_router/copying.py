"""Copy bias: inside an argument value, favour the tokens that go on copying a span of the conversation.

Most argument values are spans of the request ("Email anna@example.com" → `to: "anna@example.com"`, "$999" →
`999`). A small decoder compressing the request into hidden states drops or mangles parts of them ("example.com",
1999). `SourceCopy` finds, at each step inside a string or number value of a call's arguments, where the value
written so far occurs in the conversation (case-insensitively, starting at a word boundary) and which tokens
would copy it on, and the tokens that close it where the span reaches the end of the conversation. Elsewhere
the value's end is left to the model (a boost for the closing quote at every phrase end cut "Berkeley, CA" to
"Berkeley": RESULTS.md, stop 36). `RouterConfig.copy_bias` is added to those tokens' logits; the grammar still
decides what is allowed, so an `enum` or a type wins over the copy.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .decoding import JsonState

_NUMBER_CHARS = frozenset("0123456789.-+eE")
_MAX_SPAN_CHARS = 24
"""The longest token text looked up at one position (no BPE token of the backbone is longer)."""


def open_value(text: str) -> tuple[str, str] | None:
    """("string" | "number", the value so far) when a call list's `text` ends inside an argument value — a string
    value (not a key) or a number at bracket depth 3 or more (inside a call's "arguments") — or ("start", "")
    where a value may begin next (after ":", or "[" / "," in an array); None otherwise."""
    state, containers = JsonState(), []
    last = ""  # the last character outside strings that is not a space ('"' once a string closed)
    string_start = number_start = 0
    string_is_value = False
    number_follows = ""  # the character before the number being written
    for index, char in enumerate(text):
        was_in_string = state.in_string
        change = state.feed(char)
        if was_in_string:
            last = last if state.in_string else '"'
            continue
        in_array = containers[-1:] == ["["]
        if state.in_string:  # a string opens: a value after ":" or as an array member, a key otherwise
            string_start, string_is_value = index + 1, last == ":" or (last in "[," and in_array)
        elif change > 0:
            containers.append(char)
        elif change < 0:
            containers.pop()
        if char in _NUMBER_CHARS and last not in _NUMBER_CHARS and not state.in_string:
            number_start, number_follows = index, last
        if not char.isspace():
            last = char
    if state.depth < 3:
        return None
    if state.in_string:
        return ("string", text[string_start:]) if string_is_value else None
    opens_value = {":": True, "[": True, ",": containers[-1:] == ["["]}
    if last in _NUMBER_CHARS:
        return ("number", text[number_start:].strip()) if opens_value.get(number_follows) else None
    return ("start", "") if opens_value.get(last) else None


class SourceCopy:
    """The tokens that copy a span of the conversation on from the value written so far.
    Built once per tokenizer from each token's text."""

    def __init__(self, token_texts: list[str]):
        self.token_texts = token_texts
        by_text: dict[str, list[int]] = defaultdict(list)
        for token, text in enumerate(token_texts):
            if text:
                by_text[text.lower()].append(token)
        self.by_text = dict(by_text)
        self.string_closers = [t for t, text in enumerate(token_texts) if text.startswith('"')]
        self.number_enders = [t for t, text in enumerate(token_texts) if text and text[0] not in _NUMBER_CHARS]

    def copying_tokens(self, text: str, source: str) -> list[int]:
        """Token ids that go on copying `source` (the conversation's text) from the argument value the call
        list `text` ends in (or close it where the span reaches the end of `source`); where a value may
        begin, the first digits of a number of `source` and the opening quote with the start of a word (BPE
        often merges the two: `"Lis`); [] outside a value or where the value is no span of `source`."""
        value = open_value(text)
        if value is None:
            return []
        kind, prefix = value
        lowered = source.lower()
        if kind == "start":
            return sorted(self._copying(lowered, "", "number") | self._copying(lowered, "", "string", quote='"'))
        return sorted(self._copying(lowered, prefix.lower(), kind))

    def _copying(self, source: str, prefix: str, kind: str, quote: str = "") -> set[int]:
        """The tokens (`quote` + text) that copy on each occurrence of `prefix` in the lowercased `source`, and
        the value's closers where one occurrence ends `source` (nothing left to copy)."""
        tokens: set[int] = set()
        source_end = len(source.rstrip())
        for end in self._span_ends(source, prefix, kind):
            rest = source[end:end + _MAX_SPAN_CHARS]
            if kind == "number":
                rest = rest[:next((i for i, c in enumerate(rest) if c not in _NUMBER_CHARS), len(rest))]
            for length in range(0 if quote else 1, len(rest) + 1):
                tokens.update(self.by_text.get(quote + rest[:length], ()))
            if prefix and end >= source_end:
                tokens.update(self.string_closers if kind == "string" else self.number_enders)
        return tokens

    @staticmethod
    def _span_ends(source: str, prefix: str, kind: str) -> list[int]:
        """Offsets in `source` right after an occurrence of `prefix` that starts at a word boundary (for a
        number: not inside another number); with an empty `prefix`, the word (number) starts."""
        def starts_word(start: int) -> bool:
            if kind == "number":
                return source[start:start + 1].isdigit() and (start == 0 or source[start - 1] not in _NUMBER_CHARS)
            return start == 0 or not source[start - 1].isalnum() or not source[start].isalnum()

        if not prefix:
            return [start for start in range(len(source)) if not source[start].isspace() and starts_word(start)]
        ends, start = [], source.find(prefix)
        while start >= 0:
            if starts_word(start):
                ends.append(start + len(prefix))
            start = source.find(prefix, start + 1)
        return ends

    def bias(self, logits: torch.Tensor, token_ids: list[int], source: str, amount: float) -> None:
        """Add `amount` in place to the (vocab,) `logits` of the tokens that copy `source` on after the call
        list `token_ids`."""
        tokens = self.copying_tokens("".join(self.token_texts[i] for i in token_ids), source)
        if tokens:
            logits[torch.tensor(tokens, device=logits.device)] += amount
