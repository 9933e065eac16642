"""Checks on a completed call list: how far the conversation supports it, and whether it is declined.

None of the three signals needs training, so they hold on tools the model never saw: the share of the call's
argument values stated in the conversation (`grounding.argument_grounding`), the share of the request's content
words the called tools speak of (`LexicalMatcher.coverage`), and the MiniLM cosine between the request and each
called tool (`ToolRelevance`). With `tool_choice` "auto", a call list below a threshold set for its tool count
(`min_argument_grounding`, `min_request_coverage`, `min_tool_relevance`) is answered in text instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import RouterConfig
from .grounding import ConversationText, argument_grounding
from .lexical import LexicalMatcher
from .messages import conversation_texts, selection_text
from .relevance import ToolRelevance
from .schema import Tool


@dataclass
class CallSupport:
    """How far the conversation supports a completed call list (None: no call list, or nothing to measure); the
    fields of `RouteResult` of the same names."""

    argument_grounding: float | None = None
    request_coverage: float | None = None
    tool_relevance: float | None = None


def _below(value: float | None, threshold: float | None) -> bool:
    """Whether a veto's threshold is set and the measured value (if any) lies below it."""
    return threshold is not None and value is not None and value < threshold


class CallChecks:
    """The check stage: measures a call list's support and decides whether it is declined."""

    def __init__(self, config: RouterConfig, lexical: LexicalMatcher, relevance: ToolRelevance):
        self.config, self.lexical, self.relevance = config, lexical, relevance

    def support(self, messages: list[dict[str, Any]], tools: Sequence[Tool], calls: list[dict[str, Any]],
                relevance: bool = True) -> CallSupport:
        """How far the conversation (normalised `messages`) supports the call list `calls` (`[{"name",
        "arguments"}]`) among the active `tools` (the tool relevance only with `relevance` and
        `min_tool_relevance` set for this many tools: it costs a sentence-encoder pass)."""
        schemas = {tool.name: tool.parameters for tool in tools}
        called = [tool for tool in tools if tool.name in {call["name"] for call in calls}]
        text = selection_text(messages)
        cosine = (self.relevance.score(text, called) if relevance
                  and self.config.call_thresholds(len(tools)).min_tool_relevance is not None else None)
        return CallSupport(argument_grounding(calls, schemas, ConversationText(conversation_texts(messages))),
                           self.lexical.coverage(text, called), cosine)

    def declines(self, tool_count: int, support: CallSupport) -> bool:
        """Whether a call list among `tool_count` active tools (with `tool_choice` "auto") is answered in text:
        its grounding, request coverage or tool relevance lies below the threshold set for that count."""
        thresholds = self.config.call_thresholds(tool_count)
        return any(_below(value, threshold) for threshold, value in (
            (thresholds.min_argument_grounding, support.argument_grounding),
            (thresholds.min_request_coverage, support.request_coverage),
            (thresholds.min_tool_relevance, support.tool_relevance)))
