"""LlamaIndex adapter: `ToolFormerLLM`, a `FunctionCallingLLM` whose tool calls come from a `ToolRouter`.

Bound tools become router tool dicts (their schemas are read by the gist encoder, not pasted into the prompt);
calls come back as `ToolCallBlock`s, tool results go in as `role="tool"` messages with
`additional_kwargs["tool_call_id"]`. When the router makes no call and `fallback` is set, the turn is handed
to that LLM without tools; so are turns it cannot read (images, audio, files) when they need no call. Structured
answers (`structured_predict`, `stream_structured_predict`, ...) are forced calls of a tool whose parameters are the
output class's schema, so the grammar shapes them. Install with `pip install toolformer-router[llamaindex]`.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, field_validator
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import LLM, ToolSelection
from llama_index.core.prompts import BasePromptTemplate
from llama_index.core.types import PydanticProgramMode
from pydantic import AliasChoices

from toolformer_router.errors import (
    InvalidQueryError,
    InvalidToolError,
    ToolRouterError,
    TooManyToolsError,
)
from toolformer_router.types import RouteResult

from ._common import (
    UnreadableContentError,
    check_parameters,
    greedy_temperature,
    name_tool_results,
    query_or_fallback,
    shared_router,
    structured_output_text,
    structured_output_tool,
)

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

DEFAULT_CONTEXT_WINDOW = 8192
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool",
          "function": "tool"}
_IGNORED_BLOCKS = (ThinkingBlock, CachePoint)
_PARAMETERS: weakref.WeakKeyDictionary[type, dict[str, Any]] = weakref.WeakKeyDictionary()
_CHAT_PARAMETERS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "temperature"})
"""What `chat` (and `complete`, and `*_with_tools` past their own arguments) may carry; anything else is refused."""
_FORCED_CALL_MODES = (PydanticProgramMode.DEFAULT, PydanticProgramMode.FUNCTION)
Model = TypeVar("Model", bound=BaseModel)


class NoToolCallError(ToolRouterError, ValueError):
    """`get_tool_calls_from_response(..., error_on_no_tool_call=True)` on a response without a call."""


def _arguments(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = orjson.loads(value or "{}")
        except orjson.JSONDecodeError as error:
            raise InvalidQueryError(f"tool call arguments are not valid JSON: {error}") from None
    if not isinstance(value, Mapping):
        raise InvalidQueryError(f"tool call arguments must be an object, got {type(value).__name__}")
    return dict(value)


def _call_dict(call: Any) -> dict[str, Any]:
    """A past call (ToolCallBlock, ToolSelection, OpenAI-style dict or object) as a router `{id, name, arguments}`."""
    if isinstance(call, ToolCallBlock):
        return {"id": call.tool_call_id, "name": call.tool_name, "arguments": _arguments(call.tool_kwargs)}
    if isinstance(call, BaseModel):
        call = call.model_dump()
    if not isinstance(call, Mapping):
        raise InvalidQueryError(f"unsupported tool call in chat history: {call!r:.120}")
    function = call.get("function") or {}
    return {"id": call.get("id") or call.get("tool_id") or call.get("tool_call_id"),
            "name": call.get("name") or call.get("tool_name") or function.get("name"),
            "arguments": _arguments(call.get("arguments", call.get("tool_kwargs", function.get("arguments", {}))))}


def to_router_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex chat messages -> router message dicts (tool results named after the call they answer)."""
    out = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role.value)
        if role is None:
            raise InvalidQueryError(f"message {i}: role {message.role.value!r} is not supported "
                                    f"(use system, user, assistant or tool)")
        texts, blocks = [], []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ToolCallBlock):
                blocks.append(block)
            elif not isinstance(block, _IGNORED_BLOCKS):
                raise UnreadableContentError(f"message {i}: {block.block_type} content is not supported; "
                                             f"the router reads text only")
        extra = message.additional_kwargs
        converted: dict[str, Any] = {"role": role, "content": "\n".join(texts)}
        calls = [_call_dict(c) for c in blocks or extra.get("tool_calls") or ()]
        if calls:
            converted["tool_calls"] = calls
        if role == "tool":
            converted["tool_call_id"] = extra.get("tool_call_id")
            if name := extra.get("name") or extra.get("tool_name"):
                converted["name"] = name
        out.append(converted)
    return name_tool_results(out)


def to_router_tool(tool: BaseTool | Mapping[str, Any]) -> dict[str, Any]:
    """A LlamaIndex tool (name, description, `fn_schema` parameters) as a router tool dict; dicts pass through."""
    if isinstance(tool, Mapping):
        return dict(tool)
    metadata = getattr(tool, "metadata", None)
    if metadata is None:
        raise InvalidToolError(f"not a LlamaIndex tool or a tool dict: {tool!r:.120}")
    schema = metadata.fn_schema
    if schema is None:
        parameters = metadata.get_parameters_dict()
    else:  # pydantic's JSON schema generation costs ~1 ms per tool: once per schema class
        parameters = _PARAMETERS.get(schema)
        if parameters is None:
            parameters = _PARAMETERS[schema] = metadata.get_parameters_dict()
    return {"name": metadata.name, "description": metadata.description or "", "parameters": parameters}


def usage_dict(result: RouteResult) -> dict[str, Any]:
    """The route's usage with LlamaIndex's token keys (`prompt_tokens`, `completion_tokens`, `total_tokens`)."""
    usage = result.usage
    return {**usage.model_dump(), "prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens}


class ToolFormerLLM(FunctionCallingLLM):
    """A LlamaIndex function-calling LLM backed by toolformer-router.

    Decoding is greedy under the router's grammar: `temperature` may be 0 or None, any other value is refused (no
    LlamaIndex component passes a nonzero default). Every other constructor or call parameter the router would not
    honour is refused by name.

    Example:
        >>> from llama_index.core.agent.workflow import FunctionAgent
        >>> agent = FunctionAgent(tools=[...], llm=ToolFormerLLM(fallback=some_chat_llm))
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(default="default", description="Router checkpoint folder, or 'default'.")
    device: str | None = Field(default=None, description="'cuda', 'cpu', ...; default CUDA when available.")
    dtype: str | None = Field(default=None, description="torch dtype name; default bf16 on CUDA, fp32 on CPU.")
    router: Any = Field(default=None, exclude=True,
                        description="A ToolRouter to share; default the process-wide one for the checkpoint.")
    fallback: LLM | None = Field(default=None, description="LLM that answers (without tools) when no tool is called.")
    max_tools: int | None = Field(default=None, description="Most tools one request may bind.")
    max_tokens: int | None = Field(default=None, validation_alias=AliasChoices("max_tokens", "max_new_tokens"),
                                   description="Output budget per route (router default if None); or max_new_tokens.")
    temperature: float | None = Field(default=None, description="0 or None: decoding is greedy (others are refused).")

    @field_validator("temperature")
    @classmethod
    def _greedy(cls, temperature: float | None) -> float | None:
        return greedy_temperature(temperature)

    @classmethod
    def class_name(cls) -> str:
        return "ToolFormerLLM"

    def _router(self) -> Any:
        if self.router is None:
            self.router = shared_router(self.checkpoint, self.device, self.dtype)
        return self.router

    @property
    def metadata(self) -> LLMMetadata:
        """Context window and model name from the router when one is loaded (the model is not loaded here)."""
        config = getattr(self.router, "config", None)
        return LLMMetadata(
            context_window=getattr(self.router, "max_context", DEFAULT_CONTEXT_WINDOW),
            num_output=self.max_tokens or getattr(config, "max_new_tokens", 256),
            model_name=getattr(self.router, "name", f"toolformer-router/{self.checkpoint}"),
            is_chat_model=True,
            is_function_calling_model=True,
        )

    # ----------------------------------------------------------------------------------- tools
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The `chat` kwargs: messages, router tool dicts, tool_choice ('required' when `tool_required`), and any
        other keyword (checked by `chat`)."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str)
                            else user_msg)
        return {"messages": messages, "tools": self._tools(tools),
                "tool_choice": tool_choice if tool_choice is not None else "required" if tool_required else None,
                "parallel_tool_calls": allow_parallel_tool_calls, **kwargs}

    def _tools(self, tools: Sequence[BaseTool | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        tools = [to_router_tool(t) for t in tools or ()]
        if self.max_tools is not None and len(tools) > self.max_tools:
            raise TooManyToolsError(f"{len(tools)} tools bound; this ToolFormerLLM takes at most max_tools="
                                    f"{self.max_tools}")
        return tools

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The response's `ToolCallBlock`s as `ToolSelection`s; `NoToolCallError` if none and asked to."""
        selections = [ToolSelection(tool_id=b.tool_call_id or "", tool_name=b.tool_name,
                                    tool_kwargs=_arguments(b.tool_kwargs))
                      for b in response.message.blocks if isinstance(b, ToolCallBlock)]
        if not selections and error_on_no_tool_call:
            raise NoToolCallError(f"expected at least one tool call, got text: {response.message.content!r:.200}")
        return selections

    # ----------------------------------------------------------------------------------- chat
    def _request(self, messages: Sequence[ChatMessage], **kwargs: Any) -> dict[str, Any] | None:
        """The router's arguments for a chat call (each keyword honoured or refused by name), or None when the
        fallback answers the turn unread (`query_or_fallback`)."""
        check_parameters(kwargs, _CHAT_PARAMETERS, "ToolFormerLLM.chat")
        tool_choice = kwargs.get("tool_choice")
        query = query_or_fallback(to_router_messages, messages, fallback=self.fallback is not None,
                                  tool_choice=tool_choice)
        if query is None:
            return None
        return {"query": query, "tools": self._tools(kwargs.get("tools")), "tool_choice": tool_choice,
                "parallel_tool_calls": kwargs.get("parallel_tool_calls", True), "max_new_tokens": self.max_tokens,
                "max_text_tokens": 0 if self.fallback is not None else None}  # the fallback writes the text

    @staticmethod
    def _response(result: RouteResult) -> ChatResponse:
        blocks: list[Any] = [] if result.calls else [TextBlock(text=result.text or "")]
        blocks += [ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in result.calls]
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks), delta=result.text or "",
                            raw=result.model_dump(), additional_kwargs=usage_dict(result))

    def _delegates(self, result: RouteResult | None) -> bool:
        return self.fallback is not None and (result is None or not result.calls)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Route the conversation over `tools` (kwargs from `_prepare_chat_with_tools`); fallback if no call."""
        request = self._request(messages, **kwargs)
        result = None if request is None else self._router().route(**request)
        if self._delegates(result):
            return self.fallback.chat(messages)
        return self._response(result)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async `chat`: concurrent requests are decoded together; the event loop is never blocked."""
        request = self._request(messages, **kwargs)
        result = None if request is None else await self._router().aroute(**request)
        if self._delegates(result):
            return await self.fallback.achat(messages)
        return self._response(result)

    def _streamed(self, text: str, delta: str) -> ChatResponse:
        """One streamed piece of a text answer: the message so far and the new `delta`."""
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

    def _last(self, result: RouteResult, streamed: str) -> ChatResponse:
        """The last streamed response: the whole message (calls included), its delta what was not `streamed`."""
        final = self._response(result)
        final.delta = (result.text or "")[len(streamed):]
        return final

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """`chat`, streamed: a text answer arrives piece by piece as it is decoded (each response holds the message
        so far and its `delta`); calls come with the last response, once checked. Fallback turns stream from the
        fallback."""
        request = self._request(messages, **kwargs)

        def gen() -> Generator[ChatResponse, None, None]:
            text, result = "", None
            for piece in () if request is None else self._router().stream(**request):
                if piece.result is not None:
                    result = piece.result
                    break
                text += piece.text
                yield self._streamed(text, piece.text)
            if self._delegates(result):  # nothing was streamed: the router only decided
                yield from self.fallback.stream_chat(messages)
                return
            yield self._last(result, text)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async `stream_chat`: concurrent streams are decoded together in one batch."""
        request = self._request(messages, **kwargs)

        async def gen() -> AsyncGenerator[ChatResponse, None]:
            text, result = "", None
            if request is not None:
                async for piece in self._router().astream(**request):
                    if piece.result is not None:
                        result = piece.result
                        break
                    text += piece.text
                    yield self._streamed(text, piece.text)
            if self._delegates(result):
                async for response in await self.fallback.astream_chat(messages):
                    yield response
                return
            yield self._last(result, text)

        return gen()

    # ----------------------------------------------------------------------------------- structured output
    def _structured_request(self, output_cls: type[Model], prompt: BasePromptTemplate,
                            llm_kwargs: dict[str, Any] | None, prompt_args: dict[str, Any]) -> dict[str, Any]:
        """A route whose answer is an `output_cls` object: a forced call of a tool whose parameters are its schema."""
        schema = output_cls.model_json_schema()
        tool = structured_output_tool(schema, output_cls.__name__, schema.get("description"))
        messages = self._extend_messages(prompt.format_messages(llm=self, **prompt_args))
        return self._request(messages, **{**(llm_kwargs or {}), "tools": [tool], "tool_choice": output_cls.__name__,
                                          "parallel_tool_calls": False})

    @staticmethod
    def _structured_answer(output_cls: type[Model], result: RouteResult) -> Model:
        text = structured_output_text(result)
        if text is None:
            raise ValueError(f"no complete {output_cls.__name__}: the output budget (max_new_tokens) ran out first")
        return output_cls.model_validate_json(text)

    def _structured_stream_call(self, output_cls: type[Model], prompt: BasePromptTemplate,
                                llm_kwargs: dict[str, Any] | None = None,
                                **prompt_args: Any) -> Generator[Model, None, None]:
        """What `stream_structured_predict` yields: the router writes the answer at once, so one complete, valid
        `output_cls` object (LlamaIndex's own program asks for no call here and reads calls where this LLM does
        not put them). Program modes other than function calling go to LlamaIndex's programs."""
        if self.pydantic_program_mode not in _FORCED_CALL_MODES:
            yield from super()._structured_stream_call(output_cls, prompt, llm_kwargs, **prompt_args)
            return
        result = self._router().route(**self._structured_request(output_cls, prompt, llm_kwargs, prompt_args))
        yield self._structured_answer(output_cls, result)

    async def _structured_astream_call(self, output_cls: type[Model], prompt: BasePromptTemplate,
                                       llm_kwargs: dict[str, Any] | None = None,
                                       **prompt_args: Any) -> AsyncGenerator[Model, None]:
        """Async `_structured_stream_call`."""
        if self.pydantic_program_mode not in _FORCED_CALL_MODES:
            return await super()._structured_astream_call(output_cls, prompt, llm_kwargs, **prompt_args)
        request = self._structured_request(output_cls, prompt, llm_kwargs, prompt_args)
        answer = self._structured_answer(output_cls, await self._router().aroute(**request))

        async def gen() -> AsyncGenerator[Model, None]:
            yield answer

        return gen()

    # ----------------------------------------------------------------------------------- completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)
