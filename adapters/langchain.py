"""LangChain chat model: `ChatToolFormer`, a drop-in tool-calling `BaseChatModel` backed by a `ToolRouter`.

    from toolformer_router.adapters.langchain import ChatToolFormer

    model = ChatToolFormer().bind_tools(tools)          # any number of tools; their schemas never enter a prompt
    message = model.invoke("What's the weather in Paris?")
    message.tool_calls                                   # [{"name": "get_weather", "args": {...}, "id": ..., ...}]

Tools are turned into router tools by `convert_to_openai_tool` (BaseTool, `@tool` functions, pydantic
models, TypedDicts, dicts) and encoded once per model through the router's gist cache, so re-binding on
every agent step is cheap. `tool_choice` is enforced by the router's grammar. When the router answers
without a call and a `fallback` chat model is set, the turn goes to the fallback *without* the tool schemas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from toolformer_router.errors import InvalidQueryError, TooManyToolsError
from toolformer_router.grammar import resolve_tool_choice
from toolformer_router.types import RouteResult

from ._common import name_tool_results, shared_router

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system",
          "developer": "system", "tool": "tool"}


def _text(content: str | list[Any], where: str) -> str:
    """A message's text; list content may hold only text parts (the router reads text)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(part.get("text", ""))
        elif isinstance(part, dict) and part.get("type") in ("tool_use", "tool_call", "reasoning"):
            continue  # carried by `tool_calls` / not read by the router
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidQueryError(f"{where}: content part of type {kind!r} is not supported (text only)")
    return "".join(parts)


def to_router_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> the router's `{role, content[, tool_calls, name]}` dicts."""
    converted = []
    for i, message in enumerate(messages):
        role = message.role if isinstance(message, ChatMessage) else message.type
        if role not in _ROLES:
            raise InvalidQueryError(f"message {i}: unsupported message type {type(message).__name__} ({role!r})")
        entry: dict[str, Any] = {"role": _ROLES[role], "content": _text(message.content, f"message {i}")}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [{"id": c.get("id"), "name": c["name"], "arguments": c["args"]}
                                   for c in message.tool_calls]
        if isinstance(message, ToolMessage):
            entry["tool_call_id"] = message.tool_call_id
            if message.status == "error":
                entry["content"] = f"Error: {entry['content']}"
        if message.name and role == "tool":
            entry["name"] = message.name
        converted.append(entry)
    return name_tool_results(converted)


def _without_titles(value: Any) -> Any:
    """A JSON Schema without its `title` annotations (they never change what validates)."""
    if isinstance(value, dict):
        return {k: _without_titles(v) for k, v in value.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(value, list):
        return [_without_titles(v) for v in value]
    return value


def _unique_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats of the same tool (e.g. a pydantic model and its JSON schema: equal but for titles);
    two *different* tools under one name are left for the router to reject (`DuplicateToolError`)."""
    seen: dict[str, Any] = {}
    unique = []
    for tool in tools:
        function = tool["function"]
        key = _without_titles(function)
        if seen.get(function["name"]) == key:
            continue
        seen.setdefault(function["name"], key)
        unique.append(tool)
    return unique


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    for sequence in stop or ():
        if sequence and sequence in text:
            text = text[: text.index(sequence)]
    return text


class ChatToolFormer(BaseChatModel):
    """Tool-calling chat model backed by toolformer-router (local, CPU or CUDA).

    Args:
        checkpoint: "default" (the packaged checkpoint) or a checkpoint folder.
        device, dtype: where and how to run the router (default: CUDA + bf16 when available, else CPU + fp32).
        router: an existing `ToolRouter` to share (otherwise one per checkpoint/device/dtype per process).
        fallback: chat model that answers the turns where the router makes no call (it never sees the tools).
        max_tools: refuse to bind more tools than this (default: the router's `max_tools`).
        max_new_tokens: output budget per turn (default: the router's).

    Example:
        >>> model = ChatToolFormer().bind_tools([get_weather, send_email], tool_choice="auto")
        >>> model.invoke("Weather in Paris?").tool_calls[0]["name"]
        'get_weather'
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    checkpoint: str = "default"
    device: str | None = None
    dtype: str | None = None
    router: Any = Field(default=None, exclude=True)
    fallback: BaseChatModel | None = None
    max_tools: int | None = None
    max_new_tokens: int | None = None
    _router: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "toolformer-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "device": self.device, "dtype": self.dtype,
                "max_new_tokens": self.max_new_tokens}

    def get_router(self) -> Any:
        """The router behind this model (loaded on first use, shared per checkpoint in the process)."""
        if self._router is None:
            self._router = self.router if self.router is not None else shared_router(
                self.checkpoint, self.device, self.dtype)
        return self._router

    @property
    def model_name(self) -> str:
        router = self.router if self.router is not None else self._router
        return router.name if router is not None else f"toolformer-router/{self.checkpoint}"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="toolformer-router", ls_model_name=kwargs.get("model", self.model_name),
                                 ls_model_type="chat")
        if stop:
            params["ls_stop"] = stop
        if self.max_new_tokens:
            params["ls_max_tokens"] = self.max_new_tokens
        return params

    # ------------------------------------------------------------------------------------- tools
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        response_format: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (anything `convert_to_openai_tool` accepts) with an optional `tool_choice`:
        "auto"/None, "any"/"required"/True (must call), "none", a tool name or
        `{"type": "function", "function": {"name": ...}}`. Tools are validated here (a bad tool or an
        unknown `tool_choice` name raises a `ToolRouterError` subclass); encoding happens on first use and
        is cached. `strict` is accepted for compatibility: calls always follow the schemas exactly."""
        if response_format is not None:
            raise NotImplementedError("response_format is not supported; use with_structured_output()")
        formatted = _unique_tools([convert_to_openai_tool(tool) for tool in tools])
        limit = self.max_tools
        if limit is not None and len(formatted) > limit:
            raise TooManyToolsError(f"{len(formatted)} tools bound; this model allows max_tools={limit}")
        prepared = self.get_router().prepare_tools(formatted)
        resolve_tool_choice(tool_choice, prepared)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    # ----------------------------------------------------------------------------------- routing
    def _route_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"tool_choice": kwargs.get("tool_choice"),
                "parallel_tool_calls": kwargs.get("parallel_tool_calls", True) is not False,
                "max_new_tokens": kwargs.get("max_tokens", self.max_new_tokens),
                "max_text_tokens": 0 if self.fallback is not None else None}  # the fallback writes the text

    def _wants_fallback(self, result: RouteResult) -> bool:
        return self.fallback is not None and not result.calls and result.finish_reason == "stop"

    def _message(self, result: RouteResult, stop: list[str] | None) -> AIMessage:
        calls = [{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in result.calls]
        invalid = []
        if not calls and result.raw.startswith("["):
            invalid.append({"name": None, "args": result.raw, "id": None, "type": "invalid_tool_call",
                            "error": "the output budget (max_new_tokens) ran out inside a tool call"
                            if result.finish_reason == "length" else "a number in the tool call is out of range"})
        usage = result.usage
        return AIMessage(
            content=_cut_at_stop(result.text or "", stop),
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=UsageMetadata(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                         total_tokens=usage.input_tokens + usage.output_tokens),
            response_metadata={
                "model_name": result.model, "model_provider": "toolformer-router",
                "finish_reason": "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason,
                "gist_tokens": usage.gist_tokens, "active_tools": usage.active_tools,
                "cache_hits": usage.cache_hits, "cache_misses": usage.cache_misses, "latency_s": usage.latency_s,
            },
        )

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        result = self.get_router().route(to_router_messages(messages), kwargs.get("tools") or [],
                                         **self._route_kwargs(kwargs))
        if self._wants_fallback(result):
            return ChatResult(generations=[ChatGeneration(message=self.fallback.invoke(messages, stop=stop))])
        return ChatResult(generations=[ChatGeneration(message=self._message(result, stop))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        result = await self.get_router().aroute(to_router_messages(messages), kwargs.get("tools") or [],
                                                **self._route_kwargs(kwargs))
        if self._wants_fallback(result):
            message = await self.fallback.ainvoke(messages, stop=stop)
            return ChatResult(generations=[ChatGeneration(message=message)])
        return ChatResult(generations=[ChatGeneration(message=self._message(result, stop))])

    @staticmethod
    def _chunks(message: AIMessage) -> Iterator[ChatGenerationChunk]:
        """A routed answer as chunks: the text, one chunk per call (`tool_call_chunks` that merge back into
        the same calls), and a last chunk with the usage and metadata."""
        if message.content:
            yield ChatGenerationChunk(message=AIMessageChunk(content=message.content))
        for index, call in enumerate(message.tool_calls):
            chunk = {"name": call["name"], "args": orjson.dumps(call["args"]).decode(), "id": call["id"],
                     "index": index, "type": "tool_call_chunk"}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
        for invalid in message.invalid_tool_calls:
            chunk = {"name": None, "args": invalid["args"], "id": None, "index": len(message.tool_calls),
                     "type": "tool_call_chunk"}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=message.usage_metadata, response_metadata=message.response_metadata,
            chunk_position="last"))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        result = self.get_router().route(to_router_messages(messages), kwargs.get("tools") or [],
                                         **self._route_kwargs(kwargs))
        if self._wants_fallback(result):
            for chunk in self.fallback.stream(messages, stop=stop):
                yield ChatGenerationChunk(message=chunk)
            return
        for chunk in self._chunks(self._message(result, stop)):
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        result = await self.get_router().aroute(to_router_messages(messages), kwargs.get("tools") or [],
                                                **self._route_kwargs(kwargs))
        if self._wants_fallback(result):
            async for chunk in self.fallback.astream(messages, stop=stop):
                yield ChatGenerationChunk(message=chunk)
            return
        for chunk in self._chunks(self._message(result, stop)):
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


__all__ = ["ChatToolFormer", "to_router_messages"]
