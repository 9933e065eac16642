"""Enumerations in a request ("Boston, Paris and Rome", "2 and 4 GB", "'Python' or 'Java'") and whether a call
list has covered them: where a call takes one item of an enumeration and no call takes another, the request
probably asks for one call per item (`RouterConfig.cover_enumerations`)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from .grounding import argument_values

Enumeration = tuple[str, ...]

_ITEM = re.compile(
    r"(?P<number>(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]*\w))"
    r"|(?P<quoted>'[^'\n]{1,60}'|\"[^\"\n]{1,60}\")"
    r"|(?P<name>\b[A-Z][\w'’-]*(?:[ \t]+[A-Z][\w'’-]*)*)"
)
_SEPARATOR = re.compile(r"\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or|&)\s+", re.IGNORECASE)
_CONJUNCTION = re.compile(r"\b(?:and|or)\b|&", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z0-9]+")
_NOT_NAMES = frozenset(
    "i i'm i'd i'll i've it it's we you he she they the this that these those my our your please can could would "
    "will what which who how when where why is are do does also then and or but so if thanks thank hi hello".split()
)
"""Capitalised words that start sentences rather than name things ("…, and I'd like…")."""
MAX_ITEMS = 8
"""Items of one enumeration at most (a longer run is a list argument, not calls)."""


def _kind(match: re.Match[str]) -> str:
    return "number" if match.group("number") else "words"


def _text(match: re.Match[str]) -> str:
    return match.group(0).strip("'\"").rstrip(".")


def find_enumerations(text: str) -> tuple[Enumeration, ...]:
    """The enumerations of `text`: runs of 2 to `MAX_ITEMS` items of one kind (numbers; capitalised or quoted
    words) joined only by ",", "and", "or" or "&", at least one join being a conjunction ("Paris, France" is
    not an enumeration; "Paris and Rome" is)."""
    found: list[Enumeration] = []
    run: list[re.Match[str]] = []
    joined_by_conjunction = False

    def close() -> None:
        if 2 <= len(run) <= MAX_ITEMS and joined_by_conjunction:
            found.append(tuple(_text(m) for m in run))

    for match in _ITEM.finditer(text):
        if match.group("name") and (len(match.group(0)) < 2
                                    or match.group(0).split()[0].lower().replace("’", "'") in _NOT_NAMES):
            continue  # "A", "I'm", "The …"
        between = text[run[-1].end():match.start()] if run else ""
        if run and _kind(run[-1]) == _kind(match) and _SEPARATOR.fullmatch(between):
            run.append(match)
            joined_by_conjunction |= bool(_CONJUNCTION.search(between))
            continue
        close()
        run, joined_by_conjunction = [match], False
    close()
    return tuple(found)


def _leaves(value: Any) -> Iterator[Any]:
    """The scalar argument values other than booleans and nulls."""
    return (leaf for leaf in argument_values(value) if not isinstance(leaf, bool) and leaf is not None)


def _covers(leaves: Sequence[Any], item: str) -> bool:
    """True when an argument value takes `item`: a number equal to it or among a string's numbers; for words,
    a string holding one of its words of 3 or more characters ("IDs ITM456" in "ITM456"), or, with none that
    long ("MA"), holding all of it (case, spaces and punctuation ignored)."""
    try:
        number = float(item)
    except ValueError:
        words = _TOKEN.findall(item.lower())
        texts = [_TOKEN.findall(leaf.lower()) for leaf in leaves if isinstance(leaf, str)]
        long_words = {word for word in words if len(word) >= 3}
        if long_words:
            return any(long_words & set(text) for text in texts)
        return bool(words) and any("".join(words) in "".join(text) for text in texts)
    return any(leaf == number if isinstance(leaf, (int, float))
               else any(float(token) == number for token in re.findall(r"\d+(?:\.\d+)?", str(leaf)))
               for leaf in leaves)


def _covered(calls: Sequence[dict[str, Any]], enumerations: Sequence[Enumeration]) -> set[tuple[int, int]]:
    """The (enumeration, item) index pairs some call's arguments take."""
    leaves = [list(_leaves(call.get("arguments"))) for call in calls]
    return {(e, i) for e, items in enumerate(enumerations) for i, item in enumerate(items)
            if any(_covers(call_leaves, item) for call_leaves in leaves)}


def _half_covered(covered: set[tuple[int, int]], enumerations: Sequence[Enumeration]) -> bool:
    return any(0 < sum((e, i) in covered for i in range(len(items))) < len(items)
               for e, items in enumerate(enumerations))


def enumeration_unfinished(calls: Sequence[dict[str, Any]], enumerations: Sequence[Enumeration]) -> bool:
    """True when an enumeration has an item some call takes and an item no call takes, and the last call took
    an item no earlier call did (so a list whose new call covers nothing new is free to end)."""
    if not calls or not enumerations:
        return False
    covered_before, covered = _covered(calls[:-1], enumerations), _covered(calls, enumerations)
    return covered != covered_before and _half_covered(covered, enumerations)


def enumeration_open(calls: Sequence[dict[str, Any]], enumerations: Sequence[Enumeration]) -> bool:
    """True when an enumeration has an item some call takes and an item no call takes."""
    return bool(calls and enumerations) and _half_covered(_covered(calls, enumerations), enumerations)
