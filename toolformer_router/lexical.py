"""`LexicalMatcher`: BM25 between the user's words and each tool's words (name, description, parameter names,
descriptions and enum values). It needs no training, so it holds on tools the model never saw; the router adds it,
weighted by `RouterConfig.lexical_weight`, to the `ToolSelector`'s learned score.

Words are lower-cased, split at `snake_case`, `camelCase` and punctuation, stemmed (Snowball English) and
stripped of a short stop-word list. A tool's words are computed once per schema and cached; the BM25
statistics (document frequencies, lengths) are those of the active tools of each request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import cachetools
import snowballstemmer
import torch
from rank_bm25 import BM25Okapi

from .schema import MAX_CACHED_TOOLS, Tool

STOP_WORDS = frozenset(
    "a an and are as at be by can for from get how i in is it me my of on or please that the this to what with "
    "you".split()
)
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


class LexicalMatcher:
    """BM25 (`rank_bm25.BM25Okapi`) scores of a query against a list of tools.

    `k1` saturates repeated words, `b` scales the length normalisation (0.3: schema texts vary in length
    for reasons unrelated to relevance). At most `max_cached_tools` tools' word lists are kept (LRU).
    """

    def __init__(self, k1: float = 1.5, b: float = 0.3, max_cached_tools: int = MAX_CACHED_TOOLS) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b = k1, b
        self.max_cached_tools = max_cached_tools
        self._stemmer = snowballstemmer.stemmer("english")
        self._tool_words: cachetools.LRUCache[str, list[str]] = cachetools.LRUCache(maxsize=max_cached_tools)

    def words(self, text: str) -> list[str]:
        """Stemmed, lower-cased content words of `text` ("getWeatherByCity" -> ["weather", "citi"])."""
        split = _CAMEL_BOUNDARY.sub(r"\1 \2", text).lower()
        return self._stemmer.stemWords([w for w in _WORD.findall(split) if w not in STOP_WORDS])

    def tool_words(self, tool: Tool) -> list[str]:
        """The words a tool is matched on: its name, description and every parameter's name, description and
        enum values."""
        cached = self._tool_words.get(tool.schema_hash)
        if cached is not None:
            return cached
        parts = [tool.name, tool.description]
        _parameter_text(tool.parameters, parts)
        words = self.words(" ".join(parts)) or ["_"]  # BM25 needs a non-empty document
        self._tool_words[tool.schema_hash] = words
        return words

    def coverage(self, text: str, tools: Sequence[Tool]) -> float | None:
        """The share of `text`'s distinct content words found among `tools`' words (`tool_words`): how much of a
        request the called tools speak of. None when `text` has no content word."""
        query = set(self.words(text))
        if not query:
            return None
        known = set().union(*(self.tool_words(tool) for tool in tools))
        return len(query & known) / len(query)

    def scores(self, text: str, tools: Sequence[Tool]) -> torch.Tensor:
        """BM25 score (T,) of each tool for `text`, with document frequencies over `tools`; zeros when `text`
        has no content word."""
        if not tools:
            return torch.zeros(0)
        query = self.words(text)
        if not query:
            return torch.zeros(len(tools))
        index = BM25Okapi([self.tool_words(tool) for tool in tools], k1=self.k1, b=self.b)
        return torch.from_numpy(index.get_scores(query)).float()


def _parameter_text(schema: Any, parts: list[str], depth: int = 0) -> None:
    """Append the property names, descriptions and enum values of a JSON Schema (nested objects and arrays
    included): a query often names an enum value ("a burger" -> `food: enum[BURGER, PIZZA]`)."""
    if not isinstance(schema, dict) or depth > 8:
        return
    parts.extend(str(value) for value in schema.get("enum") or () if isinstance(value, str | int | float))
    for name, child in (schema.get("properties") or {}).items():
        parts.append(name)
        if isinstance(child, dict):
            parts.append(str(child.get("description", "")))
            _parameter_text(child, parts, depth + 1)
    _parameter_text(schema.get("items"), parts, depth + 1)
