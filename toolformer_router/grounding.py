"""Argument grounding: how much of a call list's arguments the conversation states.

A call that answers a request takes most of its values from it ("weather in Lisbon" → `city: "Lisbon"`). A call
made where no active tool fits has to invent them: the decoder, asked about the capital of France with only a
triangle-area tool, fills `base` and `height` with numbers nobody gave. `argument_grounding` is the share of a
list's checkable values found in the conversation; `RouterConfig.min_argument_grounding` turns a call list below
it into a text answer. Values the schema itself offers (an `enum` member, a `default`, a `const`), booleans and
nulls are not checkable: the model picks them, the user need not say them.

`drop_unstated_optionals` acts on the values one by one: an optional argument that shares not a word or a
number with the conversation is dropped from the call (`RouterConfig.drop_unstated_optionals`), so the tool's
own default applies instead of a value the decoder made up ("date": "2023-01-01" for "movies playing today").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "hundred": 100, "thousand": 1000,
                "dozen": 12, "once": 1, "twice": 2, "single": 1, "double": 2, "triple": 3, "half": 0.5}
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")
_NOT_WORD = re.compile(r"[^0-9a-z]+")
_DIGITS = re.compile(r"\d+")
_CODE = re.compile(r"[A-Z]{2,5}")
"""A code the decoder may write for words the user wrote: "USD" for "US dollars", "NYC" for "New York City"."""


def _words(text: str) -> list[str]:
    return _NOT_WORD.sub(" ", text.lower()).split()


def _abbreviates(code: str, words: list[str], start: int) -> bool:
    """Whether `code` (lower case) is made of prefixes of `words[start]`, `words[start + 1]`, … in order, at
    least one letter of each ("usd": "us" + "d" of "us dollars"; "eur": "eur" of "euros")."""
    if not code:
        return True
    if start == len(words):
        return False
    word = words[start]
    return any(code[:n] == word[:n] and _abbreviates(code[n:], words, start + 1)
               for n in range(1, min(len(code), len(word)) + 1))


def schema_constants(schema: Any) -> set[str]:
    """JSON texts of every value a schema offers itself: `enum` members, `default`s and `const`s, at any depth."""
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "enum" and isinstance(value, list):
                    found.update(json.dumps(member, sort_keys=True) for member in value)
                elif key in ("default", "const"):
                    found.add(json.dumps(value, sort_keys=True))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


def argument_values(arguments: Any) -> Iterator[Any]:
    """The scalar values of a call's arguments, depth first (the values of objects, the members of arrays)."""
    if isinstance(arguments, Mapping):
        for value in arguments.values():
            yield from argument_values(value)
    elif isinstance(arguments, list):
        for value in arguments:
            yield from argument_values(value)
    else:
        yield arguments


class ConversationText:
    """The words and numbers of a conversation, ready for `states` lookups."""

    def __init__(self, texts: Iterable[str]) -> None:
        text = "\n".join(texts)
        words = _words(text)
        self.sequence = words
        self.spaced = " " + " ".join(words) + " "
        self.compact = "".join(words)
        self.words = set(words)
        self.numbers = {float(part) for number in _NUMBER.findall(text)
                        for part in [number.replace(",", ""), *number.split(",")] if part.strip("+-")}
        self.numbers |= {float(NUMBER_WORDS[w]) for w in self.words if w in NUMBER_WORDS}
        self.digit_runs = {run.lstrip("0") for word in self.words for run in _DIGITS.findall(word)}

    def states(self, value: Any) -> bool:
        """Whether the conversation states a scalar value: a number it writes (digits, a few number words, or
        the percentage of a fraction), a string whose words it contains in order, without spaces, or at least
        half of them anywhere, or a code of 2-5 capitals that abbreviates words it contains in a row."""
        if isinstance(value, (int, float)):
            return float(value) in self.numbers or round(float(value) * 100, 9) in self.numbers
        words = _words(str(value))
        if not words:
            return True
        joined = " ".join(words)
        if f" {joined} " in self.spaced or (len(joined) >= 4 and joined.replace(" ", "") in self.compact):
            return True
        if sum(word in self.words for word in words) * 2 >= len(words):
            return True
        return bool(_CODE.fullmatch(str(value))) and any(
            _abbreviates(joined, self.sequence, start) for start in range(len(self.sequence)))

    def mentions(self, value: Any) -> bool:
        """Whether the conversation has anything of a scalar value: a number it `states`, or a string with a
        word it contains (a run of digits counts where the conversation has it in any word: "10" of
        "2023-03-10" in "March 10th")."""
        if isinstance(value, (int, float)):
            return self.states(value)
        return any(word in self.words or (word.isdigit() and word.lstrip("0") in self.digit_runs)
                   for word in _words(str(value)))


def _checkable(value: Any, offered: set[str]) -> bool:
    """Whether a scalar argument value is one the user would have to state: not a boolean or null, not a
    string without a letter or digit, and not a value the schema offers (`schema_constants`)."""
    return not (value is None or isinstance(value, bool) or (isinstance(value, str) and not _words(value))
                or json.dumps(value, sort_keys=True) in offered)


def argument_grounding(calls: Iterable[Mapping[str, Any]], schemas: Mapping[str, Any],
                       conversation: ConversationText) -> float | None:
    """The share of the calls' checkable argument values that the conversation states, in [0, 1]; None when
    no value is checkable (no arguments, or only booleans, nulls, strings without a letter or digit and values
    the tool's schema offers).

    `calls`: {"name", "arguments"} mappings; `schemas`: tool name → its parameters schema."""
    stated = checked = 0
    for call in calls:
        offered = schema_constants(schemas.get(call["name"], {}))
        for value in argument_values(call.get("arguments") or {}):
            if _checkable(value, offered):
                checked += 1
                stated += conversation.states(value)
    return stated / checked if checked else None


def drop_unstated_optionals(calls: Iterable[Mapping[str, Any]], schemas: Mapping[str, Any],
                            conversation: ConversationText) -> list[dict[str, Any]]:
    """`calls` without the optional arguments (not in their tool's top-level `required`) that have checkable
    values and none that the conversation `mentions`: the user said nothing of them, so the tool's default
    applies. Required arguments, and optional ones whose values are all booleans, nulls or schema constants,
    are kept.

    `calls`: {"name", "arguments"} mappings; `schemas`: tool name → its parameters schema."""
    kept = []
    for call in calls:
        schema = schemas.get(call["name"]) or {}
        required, properties = set(schema.get("required") or ()), schema.get("properties") or {}
        arguments = {}
        for key, value in (call.get("arguments") or {}).items():
            offered = schema_constants(properties.get(key, {}))
            checkable = [v for v in argument_values(value) if _checkable(v, offered)]
            if key in required or not checkable or any(conversation.mentions(v) for v in checkable):
                arguments[key] = value
        kept.append({**call, "arguments": arguments})
    return kept
