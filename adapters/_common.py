"""What every adapter shares: one router per (checkpoint, device, dtype) in the process, so a tool is encoded
once per model whichever adapter or request brought it, and the mapping of tool results to tool names."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from toolformer_router.errors import InvalidQueryError
from toolformer_router.router import ToolRouter
from toolformer_router.schema import MAX_CACHED_TOOLS
from toolformer_router.types import RouteResult

_ROUTERS: dict[tuple[str, str | None, str | None], ToolRouter] = {}
_ROUTERS_LOCK = threading.Lock()


def shared_router(checkpoint: str | Path = "default", device: str | None = None, dtype: str | None = None,
                  max_cached_tools: int = MAX_CACHED_TOOLS) -> ToolRouter:
    """The process-wide `ToolRouter` for a checkpoint and settings (loaded on first use; its gist cache is shared)."""
    key = (str(checkpoint), None if device is None else str(device), None if dtype is None else str(dtype),
           max_cached_tools)
    with _ROUTERS_LOCK:
        router = _ROUTERS.get(key)
        if router is None:
            router = ToolRouter.from_pretrained(checkpoint, device=device, dtype=dtype,
                                                max_cached_tools=max_cached_tools)
            _ROUTERS[key] = router
        return router


def name_tool_results(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Give each `role="tool"` message the name of the call it answers (found by `tool_call_id` in the
    assistant messages before it), so the decoder sees "Result of <tool>: ..."; other messages are copied."""
    names: dict[str, str] = {}
    out = []
    for message in messages:
        message = dict(message)
        for call in message.get("tool_calls") or ():
            if call.get("id"):
                names[call["id"]] = call.get("name") or (call.get("function") or {}).get("name")
        if message.get("role") == "tool" and not message.get("name"):
            name = names.get(message.get("tool_call_id") or "")
            if name:
                message["name"] = name
        out.append(message)
    return out


ANY_JSON_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
"""The schema of `response_format={"type": "json_object"}`: any JSON object."""


def structured_output_tool(schema: Mapping[str, Any] | None = None, name: str = "structured_output",
                           description: str | None = None) -> dict[str, Any]:
    """The synthetic tool behind a structured answer: its `parameters` are `schema` (None: any JSON object, see
    `ANY_JSON_OBJECT`), so the grammar that constrains a call's arguments constrains the answer. Route with
    `tool_choice=name` and `parallel_tool_calls=False`; read the answer with `structured_output_text`."""
    wanted = description or "Write the answer to the conversation's last message as a JSON object of this shape."
    parameters = dict(ANY_JSON_OBJECT if schema is None else schema)
    return {"type": "function", "function": {"name": name, "description": wanted, "parameters": parameters}}


def structured_output_text(result: RouteResult) -> str | None:
    """The JSON text of a structured answer routed with `structured_output_tool`: the forced call's arguments as
    the grammar accepted them (from `result.raw` when it holds the call list, since `result.calls` may have been
    pruned, e.g. by `drop_unstated_optionals`, which suits tool calls but not answers); None when no call was
    completed (the budget ran out first)."""
    if not result.calls:
        return None
    try:
        parsed = orjson.loads(result.raw)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict) and "arguments" in parsed[0]:
        arguments = parsed[0]["arguments"]
    else:
        arguments = result.calls[0].arguments
    return orjson.dumps(arguments).decode()


class UnreadableContentError(InvalidQueryError):
    """A message part the router cannot read (an image, audio, a file). An adapter with a `fallback` hands such a
    turn to the fallback when the turn needs no call (`query_or_fallback`)."""


def requires_call(tool_choice: Any) -> bool:
    """Whether `tool_choice` obliges the turn to call a tool ("required", "any", True or a tool's name)."""
    return tool_choice not in (None, "auto", False, "none")


def query_or_fallback(convert: Callable[[Any], list[dict[str, Any]]], messages: Any, *, fallback: bool,
                      tool_choice: Any) -> list[dict[str, Any]] | None:
    """`convert(messages)`, the router's query; or None when a fallback should answer the turn unread: the messages
    hold a part the router cannot read (`UnreadableContentError`), a fallback is set and the turn needs no call
    (the fallback never sees the tools). Otherwise the error stands."""
    try:
        return convert(messages)
    except UnreadableContentError as error:
        if not fallback:
            raise
        if requires_call(tool_choice):
            raise UnreadableContentError(f"{error}; the fallback answers such turns only when they need no call "
                                         f"(here tool_choice={tool_choice!r})") from None
        return None


def greedy_temperature(temperature: float | None) -> float | None:
    """`temperature` when greedy decoding honours it (None or 0); any other value is refused with a `ValueError`.
    No framework the adapters serve passes a nonzero default, so a nonzero value is the user's and is not dropped."""
    if temperature:
        raise ValueError(f"temperature={temperature!r} is not supported: the router decodes greedily under its "
                         f"grammar (temperature 0, the same answer every time); leave temperature unset or 0")
    return temperature


def check_parameters(kwargs: Mapping[str, Any], supported: Collection[str], where: str) -> None:
    """Refuse, by name, each of `kwargs` that `where` does not honour (none is dropped silently); `temperature`
    must be one greedy decoding honours (`greedy_temperature`)."""
    unsupported = sorted(set(kwargs) - set(supported))
    if unsupported:
        takes = f" (it takes {', '.join(sorted(supported))})" if supported else ""
        raise TypeError(f"{where} does not support {', '.join(map(repr, unsupported))}{takes}")
    greedy_temperature(kwargs.get("temperature"))
