"""A scripted stand-in for `ToolRouter` in adapter tests: it checks its input exactly as the router does
(tool definitions, messages, tool_choice) and answers with the next scripted decision, so that a test can
pin the exact call sequence an agent framework goes through."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

from toolformer_router.grammar import resolve_tool_choice
from toolformer_router.messages import normalize_messages
from toolformer_router.schema import Tool, normalize_tools
from toolformer_router.streaming import answer_text, check_stop
from toolformer_router.types import RouteChunk, RouteResult, RouteUsage, ToolCall

Step = RouteResult | Callable[[list[dict[str, Any]], list[Tool], Any], RouteResult]

_ids = itertools.count()


def call(tool_name: str, /, **arguments: Any) -> RouteResult:
    """A scripted decision: one call."""
    return calls((tool_name, arguments))


def calls(*pairs: tuple[str, dict[str, Any]]) -> RouteResult:
    """A scripted decision: several calls."""
    chosen = [ToolCall(id=f"call_{next(_ids)}", name=n, arguments=a) for n, a in pairs]
    return RouteResult(calls=chosen, raw="[...]", model="scripted", usage=RouteUsage(output_tokens=10))


def _pieces(text: str) -> list[str]:
    """`text` cut after each run of spaces: pieces that join back into it."""
    return re.findall(r"\S*\s*", text)[:-1] if text else []


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

    def _answer(self, query, tools, tool_choice, parallel_tool_calls, max_new_tokens=None, max_text_tokens=None,
                stop=None) -> RouteResult:
        messages = normalize_messages(query)
        active = self.prepare_tools(tools or [])
        mode, forced = resolve_tool_choice(tool_choice, active)
        with self._lock:
            self.requests.append({"messages": messages, "tools": [t.name for t in active],
                                  "tool_choice": tool_choice, "parallel_tool_calls": parallel_tool_calls,
                                  "max_new_tokens": max_new_tokens, "max_text_tokens": max_text_tokens,
                                  "stop": stop})
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
        if result.text and max_text_tokens == 0:
            result.text = ""  # as the router does: it only decides
        if result.text and stop:
            result.text = answer_text(result.text, check_stop(stop))  # as the router ends a text answer
        result.usage.input_tokens = sum(len(m["content"].split()) for m in messages)
        result.usage.active_tools = len(active)
        return result

    def route(self, query, tools=None, *, tool_choice=None, parallel_tool_calls=True, max_new_tokens=None,
              max_text_tokens=None, stop=None, **_: Any) -> RouteResult:
        return self._answer(query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens, stop)

    def stream(self, query, tools=None, **kwargs: Any) -> Iterator[RouteChunk]:
        """`route`, its text in word-sized pieces (as `ToolRouter.stream` sends a text answer), then the result."""
        result = self.route(query, tools, **kwargs)
        yield from (RouteChunk(text=piece) for piece in _pieces(result.text or ""))
        yield RouteChunk(result=result)

    async def astream(self, query, tools=None, **kwargs: Any) -> AsyncIterator[RouteChunk]:
        result = await self.aroute(query, tools, **kwargs)
        for piece in _pieces(result.text or ""):
            yield RouteChunk(text=piece)
        yield RouteChunk(result=result)

    def route_batch(self, queries, tools=None, *, tool_choice=None, parallel_tool_calls=True, max_new_tokens=None,
                    max_text_tokens=None, **_: Any) -> list[RouteResult]:
        return [self._answer(q, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens)
                for q in queries]

    async def aroute(self, query, tools=None, *, tool_choice=None, parallel_tool_calls=True, max_new_tokens=None,
                     max_text_tokens=None, stop=None) -> RouteResult:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return self._answer(query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens, stop)
