"""A scripted stand-in for `ToolRouter` in adapter tests: it checks its input exactly as the router does
(tool definitions, messages, tool_choice) and answers with the next scripted decision, so that a test can
pin the exact call sequence an agent framework goes through."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from toolformer_router.grammar import resolve_tool_choice
from toolformer_router.messages import normalize_messages
from toolformer_router.schema import Tool, normalize_tools
from toolformer_router.types import RouteResult, RouteUsage, ToolCall

Step = RouteResult | Callable[[list[dict[str, Any]], list[Tool], Any], RouteResult]

_ids = itertools.count()


def call(tool_name: str, /, **arguments: Any) -> RouteResult:
    """A scripted decision: one call."""
    return calls((tool_name, arguments))


def calls(*pairs: tuple[str, dict[str, Any]]) -> RouteResult:
    """A scripted decision: several calls."""
    chosen = [ToolCall(id=f"call_{next(_ids)}", name=n, arguments=a) for n, a in pairs]
    return RouteResult(calls=chosen, raw="[...]", model="scripted", usage=RouteUsage(output_tokens=10))


def text(content: str) -> RouteResult:
    """A scripted decision: no call, this text."""
    return RouteResult(text=content, raw=content, model="scripted", usage=RouteUsage(output_tokens=len(content.split())))


class ScriptedRouter:
    """Answers `route` / `aroute` / `route_batch` with `script` in order (a step may be a function of
    (messages, tools, tool_choice)); records every request in `requests`."""

    name = "scripted"
    max_context = 8192

    def __init__(self, script: Sequence[Step] = (), *, default: Step | None = None, delay_s: float = 0.0):
        self.script = list(script)
        self.default = default
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        """`aroute` calls awaiting at once (now / at most): shows that requests overlapped."""
        self._lock = threading.Lock()

    def prepare_tools(self, tools: Iterable[Any]) -> list[Tool]:
        return normalize_tools(tools)

    def _answer(self, query, tools, tool_choice, parallel_tool_calls, max_new_tokens=None, max_text_tokens=None
                ) -> RouteResult:
        messages = normalize_messages(query)
        active = self.prepare_tools(tools or [])
        mode, forced = resolve_tool_choice(tool_choice, active)
        with self._lock:
            self.requests.append({"messages": messages, "tools": [t.name for t in active],
                                  "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls,
                                  "max_new_tokens": max_new_tokens, "max_text_tokens": max_text_tokens})
            step = self.script.pop(0) if self.script else self.default
        if step is None:
            raise AssertionError(f"script exhausted at request {len(self.requests)}: {messages[-1]}")
        result = step(messages, active, tool_choice) if callable(step) else step.model_copy(deep=True)
        names = {t.name for t in active}
        if any(c.name not in names for c in result.calls) or (mode == "none" and result.calls):
            raise AssertionError(f"scripted calls {[c.name for c in result.calls]} break the request's tools/tool_choice")
        if mode in ("required", "forced") and not result.calls:
            raise AssertionError("scripted text answer but tool_choice requires a call")
        if forced and any(c.name != forced for c in result.calls):
            raise AssertionError(f"tool_choice forces {forced!r}")
        result.usage.input_tokens = sum(len(m["content"].split()) for m in messages)
        result.usage.active_tools = len(active)
        return result

    def route(self, query, tools=None, *, tool_choice=None, parallel_tool_calls=True, max_new_tokens=None,
              max_text_tokens=None, **_: Any) -> RouteResult:
        return self._answer(query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens)

    def route_batch(self, queries, tools=None, *, tool_choice=None, parallel_tool_calls=True, max_new_tokens=None,
                    max_text_tokens=None, **_: Any) -> list[RouteResult]:
        return [self._answer(q, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens)
                for q in queries]

    async def aroute(self, query, tools=None, *, tool_choice=None, parallel_tool_calls=True, max_new_tokens=None,
                     max_text_tokens=None) -> RouteResult:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return self._answer(query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens)
