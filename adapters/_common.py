"""What every adapter shares: one router per (checkpoint, device, dtype) in the process, so a tool is encoded
once per model whichever adapter or request brought it, and the mapping of tool results to tool names."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from toolformer_router.router import ToolRouter

_ROUTERS: dict[tuple[str, str | None, str | None], ToolRouter] = {}
_ROUTERS_LOCK = threading.Lock()


def shared_router(checkpoint: str | Path = "default", device: str | None = None, dtype: str | None = None) -> ToolRouter:
    """The process-wide `ToolRouter` for a checkpoint (loaded on first use; its gist cache is shared)."""
    key = (str(checkpoint), None if device is None else str(device), None if dtype is None else str(dtype))
    with _ROUTERS_LOCK:
        router = _ROUTERS.get(key)
        if router is None:
            router = ToolRouter.from_pretrained(checkpoint, device=device, dtype=dtype)
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
