"""An OpenAI-compatible HTTP server over a `ToolRouter` (FastAPI + uvicorn; `pip install toolformer-router[server]`).

    toolformer-router serve --checkpoint default --port 8000 [--api-key KEY]

then point any OpenAI client at `http://127.0.0.1:8000/v1`: `POST /v1/chat/completions` (tools in OpenAI's or
MCP's shape, tool_choice, parallel_tool_calls, max_tokens, stop, response_format, streaming), `GET /v1/models` and
`GET /v1/models/{id}`. Any model name is accepted in a completion and echoed back. Decoding is greedy (see
`create_app`'s chat completion endpoint for the sampling parameters). Requests are routed with `router.aroute`, so
concurrent requests share device batches. The router decides whole calls, so a streamed response is sent in
OpenAI's chunk format once the decision is made.

Admission control: at most `max_pending` completions wait for the router or are answered at once (past it, an
immediate 429 with `Retry-After`); a completion whose client disconnects is cancelled, so that a request not yet
decoded never is; a client must send a request's head, and then its body, within `read_timeout_s` each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Protocol, TypeVar

import orjson
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from toolformer_router.errors import (
    InvalidQueryError,
    InvalidToolError,
    QueryTooLongError,
    ToolRouterError,
    TooManyToolsError,
    UnknownToolError,
)
from toolformer_router.schema import MAX_CACHED_TOOLS
from toolformer_router.streaming import MAX_STOP_CHARS, MAX_STOP_SEQUENCES
from toolformer_router.types import RouteChunk, RouteResult, RouteUsage

from ._common import (
    name_tool_results,
    shared_router,
    structured_output_text,
    structured_output_tool,
)

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_TOOLS = 1000  # the router's own bound (hosted APIs stop at 128)
DEFAULT_MAX_PENDING = 64  # two batches of the router's default `max_batch_size`: one decoding, one waiting
DEFAULT_READ_TIMEOUT_S = 30.0  # a 4 MiB body at 140 kB/s
DEFAULT_KEEP_ALIVE_S = 5  # uvicorn's
RETRY_AFTER_S = 1
T = TypeVar("T")


class Router(Protocol):
    def prepare_tools(self, tools: Any) -> Any: ...

    async def aroute(self, query: Any, tools: Any = None, *, tool_choice: Any = None, parallel_tool_calls: bool = True,
                     max_new_tokens: int | None = None, max_text_tokens: int | None = None,
                     stop: str | list[str] | None = None) -> RouteResult: ...

    def astream(self, query: Any, tools: Any = None, **kwargs: Any) -> AsyncIterator[RouteChunk]: ...


# ------------------------------------------------------------------------------------------- request models
class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Model):
    type: str
    text: str | None = None


class FunctionCall(_Model):
    name: str
    arguments: str = ""


class ToolCallParam(_Model):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallParam] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class FunctionTool(_Model):
    type: Literal["function"]
    function: FunctionDefinition


class MCPTool(_Model):
    """A tool as an MCP server lists it (`tools/list`); its other fields (`title`, `annotations`, ...) are ignored."""

    name: str
    description: str | None = None
    inputSchema: dict[str, Any]


def _tool_shape(tool: Any) -> str | None:
    """The tag of a `tools` entry: "openai" (`type`/`function`) or "mcp" (`inputSchema`); None for neither."""
    if isinstance(tool, dict):
        if "type" in tool or "function" in tool:
            return "openai"
        if "inputSchema" in tool:
            return "mcp"
    return None


ToolParam = Annotated[
    Annotated[FunctionTool, Tag("openai")] | Annotated[MCPTool, Tag("mcp")],
    Discriminator(_tool_shape, custom_error_type="invalid_tool", custom_error_message=(
        "a tool is either {'type': 'function', 'function': {'name', 'description', 'parameters'}} or an MCP tool "
        "{'name', 'description', 'inputSchema'}")),
]


class FunctionName(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(_Model):
    include_usage: bool | None = None


class JSONSchemaFormat(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    """None: any JSON object, as with `{"type": "json_object"}`."""
    strict: bool | None = None
    """The grammar always enforces the schema (strictly, with the router's normalisation), whatever this says."""


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = Annotated[  # tagged, so that an error is about the form sent (one string, or a list of them)
    Annotated[StopSequence, Tag("one")]
    | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES), Tag("many")],
    Discriminator(lambda value: "one" if isinstance(value, str) else "many"),
]


class ChatCompletionRequest(_Model):
    """The fields of OpenAI's chat completion request that the server reads; others are ignored (see
    `_SAMPLING` and `_UNSUPPORTED` for the ones that are read only to be reported or refused)."""

    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolParam] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Stop | None = None
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    functions: list[dict[str, Any]] | None = None


_SAMPLING: dict[str, Any] = {"temperature": 0, "top_p": 1, "seed": None, "presence_penalty": 0,
                             "frequency_penalty": 0}
"""Sampling parameters, each with the value that greedy decoding already honours: other values are accepted (clients
send some by default) and ignored, and the response's `x-toolformer-decoding` header names them."""

_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "n": (1, "only n=1 is supported: decoding is greedy, so every choice would be the same"),
    "logprobs": (False, "logprobs are not supported by this server"),
    "top_logprobs": (0, "top_logprobs are not supported by this server (nor logprobs)"),
    "logit_bias": ({}, "logit_bias is not supported: the grammar and the router's calibration choose the tokens"),
    "functions": ([], "the legacy 'functions' parameter is not supported: send 'tools'"),
}
"""Parameters that change the answer in a way this server cannot do, each with the one value it accepts (and the
reason given with the 400 for any other)."""

_FIELDS = {field.alias or name
           for model in (ChatCompletionRequest, Message, ContentPart, ToolCallParam, FunctionCall, FunctionTool,
                         MCPTool, FunctionDefinition, NamedToolChoice, StreamOptions, ResponseFormat, JSONSchemaFormat)
           for name, field in model.model_fields.items()}


# ------------------------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def response(self) -> Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return Response(orjson.dumps(body), status_code=self.status, media_type="application/json",
                        headers=self.headers)


def _param(loc: tuple[Any, ...]) -> str:
    """A pydantic location as OpenAI writes a param (`messages.[0].content`), without union member tags."""
    return ".".join(f"[{part}]" if isinstance(part, int) else part
                    for part in loc if isinstance(part, int) or part in _FIELDS)


def _validation_error(error: ValidationError) -> APIError:
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return APIError(400, f"The request body is not valid JSON: {first['ctx'].get('error', first['msg'])}")
    param = _param(first["loc"])
    if first["type"] == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param)
    return APIError(400, f"Invalid value for '{param}': {first['msg']}.", param)


def _router_error(error: ToolRouterError, tools_param: str = "tools") -> APIError:
    """The 400 of a router error; `tools_param` names where the tools at fault came from."""
    if isinstance(error, UnknownToolError):
        return APIError(400, str(error), "tool_choice")
    if isinstance(error, (InvalidToolError, TooManyToolsError)):
        return APIError(400, str(error), tools_param)
    if isinstance(error, InvalidQueryError):
        code = "context_length_exceeded" if isinstance(error, QueryTooLongError) else None
        return APIError(400, str(error), "messages", code)
    return APIError(400, str(error))


def _differs(body: ChatCompletionRequest, name: str, neutral: Any) -> bool:
    value = getattr(body, name)
    return value is not None and value != neutral


def parse_request(raw: bytes) -> ChatCompletionRequest:
    """The validated request; a 400 for an invalid one or one that sets a parameter of `_UNSUPPORTED`."""
    try:
        body = ChatCompletionRequest.model_validate_json(raw)
    except ValidationError as error:
        raise _validation_error(error) from None
    for name, (neutral, reason) in _UNSUPPORTED.items():
        if _differs(body, name, neutral):
            raise APIError(400, reason, name)
    return body


def decoding_header(body: ChatCompletionRequest) -> str:
    """The `x-toolformer-decoding` header: `greedy`, then `; ignored=<names>` for the sampling parameters set."""
    ignored = [name for name, neutral in _SAMPLING.items() if _differs(body, name, neutral)]
    return "greedy" + (f"; ignored={','.join(ignored)}" if ignored else "")


# ------------------------------------------------------------------------------------------- conversion
def _text(content: str | list[ContentPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise APIError(400, f"only text content parts are supported, got {part.type!r}", f"{where}.[{j}]")
    return "\n".join(part.text or "" for part in content)


def _arguments(call: ToolCallParam, where: str) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call.function.arguments or "{}")
    except orjson.JSONDecodeError as error:
        raise APIError(400, f"tool call arguments are not valid JSON: {error}", where) from None
    if not isinstance(arguments, dict):
        raise APIError(400, "tool call arguments must be a JSON object", where)
    return arguments


def router_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """OpenAI chat messages -> the router's `{role, content[, tool_calls, name]}` dicts (tool results named)."""
    out = []
    for i, message in enumerate(messages):
        converted: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                     "content": _text(message.content, f"messages.[{i}].content")}
        if message.tool_calls:
            converted["tool_calls"] = [
                {"id": c.id, "name": c.function.name,
                 "arguments": _arguments(c, f"messages.[{i}].tool_calls.[{j}].function.arguments")}
                for j, c in enumerate(message.tool_calls)
            ]
        if message.role == "tool":
            converted["tool_call_id"] = message.tool_call_id
            if message.name:
                converted["name"] = message.name
        out.append(converted)
    return name_tool_results(out)


def structured_tool(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """The synthetic tool whose forced call is the structured answer of `response_format`; None for text."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return structured_output_tool()
    spec = response_format.json_schema
    if spec is None:
        raise APIError(400, "Missing required parameter: 'response_format.json_schema'.", "response_format.json_schema")
    return structured_output_tool(spec.schema_, spec.name, spec.description)


def _structured_result(forced: RouteResult, before: RouteResult | None) -> RouteResult:
    """The forced call of a structured answer as a text result (its JSON); its usage adds the route `before`."""
    usage = forced.usage
    if before is not None:
        usage = RouteUsage(**{name: getattr(before.usage, name) + getattr(usage, name)
                              for name in RouteUsage.model_fields})
    return forced.model_copy(update={"calls": [], "text": structured_output_text(forced), "usage": usage})


def _usage(usage: RouteUsage) -> dict[str, Any]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "router": usage.model_dump(include={"gist_tokens", "active_tools", "cache_hits", "cache_misses",
                                                "latency_s"})}


def _tool_calls(result: RouteResult) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()}} for c in result.calls]


def _finish_reason(result: RouteResult) -> str:
    """OpenAI's reason: "length" whenever the budget ran out or shaped the end of the calls."""
    return "tool_calls" if result.calls and result.finish_reason == "stop" else result.finish_reason


def completion(result: RouteResult, model: str, completion_id: str, created: int) -> dict[str, Any]:
    """The `chat.completion` object of a route result."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.calls:
        message["tool_calls"] = _tool_calls(result)
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish_reason(result)}],
            "usage": _usage(result.usage)}


async def completion_events(chunks: AsyncIterator[RouteChunk], model: str, completion_id: str, created: int,
                            include_usage: bool = False) -> AsyncGenerator[bytes, None]:
    """The server-sent events of a streamed completion: the role, each piece of a text answer as it is decoded,
    then the calls (id and name, then arguments), the finish reason, the usage and [DONE]."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    yield event({"role": "assistant", "content": "", "refusal": None})
    streamed, result = "", None
    async for chunk in chunks:
        if chunk.result is not None:
            result = chunk.result
            break
        streamed += chunk.text
        yield event({"content": chunk.text})
    if result.text and result.text != streamed:  # an answer not streamed (a structured one)
        yield event({"content": result.text[len(streamed):]})
    for index, call in enumerate(_tool_calls(result)):
        function = call["function"]
        yield event({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": function["name"], "arguments": ""}}]})
        yield event({"tool_calls": [{"index": index, "function": {"arguments": function["arguments"]}}]})
    yield event({}, _finish_reason(result))
    if include_usage:
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(result.usage)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------- routing
async def _prepend(first: RouteChunk, rest: AsyncIterator[RouteChunk]) -> AsyncIterator[RouteChunk]:
    yield first
    async for chunk in rest:
        yield chunk


async def _checked(tools_param: str, work: Awaitable[T]) -> T:
    """`await work` (a router call), with the router's input errors as 400s (tool errors name `tools_param`)."""
    try:
        return await work
    except ToolRouterError as error:
        raise _router_error(error, tools_param) from None


def _route_arguments(body: ChatCompletionRequest) -> dict[str, Any]:
    """The router's arguments for a request's tool/text route."""
    tool_choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedToolChoice) else body.tool_choice
    return {"query": router_messages(body.messages), "tools": [tool.model_dump(exclude_none=True)
                                                              for tool in body.tools or ()],
            "tool_choice": tool_choice, "parallel_tool_calls": body.parallel_tool_calls is not False,
            "max_new_tokens": body.max_completion_tokens or body.max_tokens, "stop": body.stop}


async def answer_chunks(router: Router, body: ChatCompletionRequest) -> AsyncIterator[RouteChunk]:
    """`answer`, streamed: a text answer piece by piece as it is decoded (`ToolRouter.astream`), the result last;
    a structured answer comes whole."""
    if body.response_format is not None and body.response_format.type != "text":
        yield RouteChunk(result=await answer(router, body))
        return
    async for chunk in router.astream(**_route_arguments(body)):
        yield chunk


async def answer(router: Router, body: ChatCompletionRequest) -> RouteResult:
    """Route a request with its tools (calls or a text answer); with `response_format`, a text decision is replaced
    by the structured answer, the forced call of `structured_tool` (routed straight away when there are no tools or
    `tool_choice` is "none")."""
    arguments = _route_arguments(body)
    messages, tools, tool_choice, budget = (arguments[key] for key in ("query", "tools", "tool_choice",
                                                                        "max_new_tokens"))
    structured = structured_tool(body.response_format)
    if structured is not None:  # an unenforceable schema is refused before any routing
        await _checked("response_format", asyncio.to_thread(router.prepare_tools, [structured]))
    first = None
    if structured is None or (tools and tool_choice != "none"):
        first = await _checked("tools", router.aroute(
            **arguments, max_text_tokens=None if structured is None else 0))  # 0: only decide, the text is not used
        if structured is None or first.calls:
            return first
    forced = await _checked("response_format", router.aroute(
        messages, [structured], tool_choice=structured["function"]["name"], parallel_tool_calls=False,
        max_new_tokens=budget))
    return _structured_result(forced, first)


# ------------------------------------------------------------------------------------------- admission
async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body; a 413 past `limit` bytes, a 408 (and the connection closed) if it takes over `timeout_s`."""
    too_large = APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout",
                       headers={"connection": "close"}) from None
    return bytes(body)


class _Admission:
    """Counts the completions admitted: waiting for the router or being answered (a stream until it ends). Past
    `limit`, a request is refused at once with a 429 rather than queued behind them."""

    def __init__(self, limit: int):
        self.limit, self.admitted = limit, 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.admitted >= self.limit:
            raise APIError(429, f"the server is busy: {self.limit} requests are already waiting or being answered; "
                           f"retry after {RETRY_AFTER_S} s", code="rate_limit_exceeded", type="requests",
                           headers={"retry-after": str(RETRY_AFTER_S)})
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (to call after the body is read: nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _while_connected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, cancelled as soon as the client disconnects (uvicorn does not cancel the handler): a request
    nobody waits for leaves the batcher's queue before it is decoded. Then a 499 that nobody receives."""
    task, gone = asyncio.ensure_future(work), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        task.cancel()  # no-op once done
    if not task.done() or task.cancelled():
        raise APIError(499, "the client closed the request", code="client_closed_request")
    return task.result()


class _EventStream(StreamingResponse):
    """A completion's server-sent events. However the response ends (sent, failed, the client gone before or while
    it streams), the events are closed, which cancels routing not done yet, and then `on_close` runs."""

    def __init__(self, events: AsyncGenerator[bytes, None], on_close: Callable[[], None], headers: dict[str, str]):
        super().__init__(events, media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
        self.events, self.on_close = events, on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.events.aclose()
            finally:
                self.on_close()


# ------------------------------------------------------------------------------------------- app
def create_app(router: Router, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_tools: int | None = None, max_pending: int = DEFAULT_MAX_PENDING,
               read_timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> FastAPI:
    """The OpenAI-compatible app over `router` (a `ToolRouter` or anything with its `prepare_tools` and `aroute`).

    A completion whose client disconnects is cancelled: not decoded if its batch has not started (a stream ends its
    text answer at the next token).

    Args:
        api_key: when set, every request needs `Authorization: Bearer <api_key>` (else 401).
        max_body_bytes: larger request bodies are refused with 413.
        max_tools: more `tools` in one request are refused with 400 (default: the router's `max_tools`).
        max_pending: at most this many completions wait for the router or are being answered (a stream until its
            end); past it, a request is refused at once with 429 (`code: "rate_limit_exceeded"`, `Retry-After: 1`)
            instead of queueing. The default, 64, is two batches of the router's default `max_batch_size`.
        read_timeout_s: a request body that takes longer to arrive is answered with 408 and its connection closed
            (the server's bound on the request head is `serve`'s / `serve_in_thread`'s `read_timeout_s`).
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key must not be empty (it would accept an empty bearer token); pass None for no key")
    if max_pending < 1:
        raise ValueError(f"max_pending must be at least 1, got {max_pending}")
    if not read_timeout_s > 0:
        raise ValueError(f"read_timeout_s must be positive, got {read_timeout_s}")
    admission = _Admission(max_pending)
    max_tools = max_tools or getattr(getattr(router, "config", None), "max_tools", DEFAULT_MAX_TOOLS)
    model_id = getattr(router, "name", "toolformer-router")
    started = int(time.time())

    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key")

    app = FastAPI(title="toolformer-router", dependencies=[Depends(authorize)], docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> Response:
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:  # unknown path, wrong method
        return APIError(error.status_code, str(error.detail)).response()

    @app.exception_handler(Exception)
    async def server_error(_: Request, error: Exception) -> Response:  # logged by uvicorn too
        message = f"the server failed on this request ({type(error).__name__})"
        return APIError(500, message, type="server_error").response()

    model = {"id": model_id, "object": "model", "created": started, "owned_by": "toolformer-router"}

    @app.get("/v1/models")
    async def list_models() -> Response:
        return Response(orjson.dumps({"object": "list", "data": [model]}), media_type="application/json")

    @app.get("/v1/models/{requested:path}")
    async def retrieve_model(requested: str) -> Response:
        if requested != model_id:
            raise APIError(404, f"The model '{requested}' does not exist; this server serves '{model_id}'.", "model",
                           "model_not_found")
        return Response(orjson.dumps(model), media_type="application/json")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        """OpenAI's chat completion: tool calls or a text answer (streamed as chunks with `stream`).

        Decoding is greedy. `temperature`, `top_p`, `seed`, `presence_penalty` and `frequency_penalty` are accepted
        (clients send some by default) but not applied; every response says so in its `x-toolformer-decoding`
        header: `greedy`, then `; ignored=<names>` for those set to a value greedy decoding does not already
        honour (temperature 0, top_p 1, penalties 0). `n` > 1, `logprobs`, `top_logprobs`, `logit_bias` and the
        legacy `functions` are refused with a 400 naming the parameter; other unknown fields are ignored.

        `stop` (up to 4 strings) ends a text answer before the first of them (finish_reason "stop").

        `response_format` (`json_schema` or `json_object`) is decoded through the grammar, as the forced call of a
        synthetic tool whose parameters are the schema; `message.content` is the JSON text of its arguments. With
        `tools`, the request is routed with them first: calls come back as calls, and a text decision is replaced
        by the structured answer (`tool_choice="none"` goes straight to it). A schema the grammar cannot enforce is
        refused with a 400 naming `response_format`.
        """
        body = parse_request(await _read_body(request, max_body_bytes, read_timeout_s))
        if body.tools is not None and len(body.tools) > max_tools:
            raise APIError(400, f"{len(body.tools)} tools given; this server takes at most {max_tools}", "tools")
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        headers = {"x-toolformer-decoding": decoding_header(body)}
        with contextlib.ExitStack() as admitted:
            admitted.enter_context(admission.slot())
            if body.stream:
                chunks = answer_chunks(router, body)  # a bad request is a 400 before the stream starts:
                first = await _while_connected(request, _checked("tools", anext(chunks)))
                include_usage = bool(body.stream_options and body.stream_options.include_usage)
                events = completion_events(_prepend(first, chunks), body.model, completion_id, created, include_usage)
                return _EventStream(events, admitted.pop_all().close, headers)  # the stream holds the slot
            result = await _while_connected(request, answer(router, body))
        return Response(orjson.dumps(completion(result, body.model, completion_id, created)),
                        media_type="application/json", headers=headers)

    return app


# ------------------------------------------------------------------------------------------- running
class _HeadTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose next request head (request line and headers) has not
    arrived `head_timeout_s` after the connection opened or the previous response ended (uvicorn bounds only the
    idle time between requests, and any byte received resets that)."""

    head_timeout_s: ClassVar[float] = DEFAULT_READ_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._await_head()

    def on_response_complete(self) -> None:
        self._await_head()  # first: a pipelined request may start now
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._close_unless_started, self.cycle)

    def _close_unless_started(self, previous: object) -> None:
        if self.cycle is previous and not self.transport.is_closing():  # no request has started since
            self.transport.close()


def _server_config(app: FastAPI, *, read_timeout_s: float, keep_alive_s: int, **options: Any) -> uvicorn.Config:
    """uvicorn's config for `app`: request heads bounded by `read_timeout_s`, idle connections by `keep_alive_s`."""
    protocol = type("HeadTimeoutProtocol", (_HeadTimeoutProtocol,), {"head_timeout_s": read_timeout_s})
    return uvicorn.Config(app, http=protocol, timeout_keep_alive=keep_alive_s, **options)


def serve(checkpoint: str | Path = "default", *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          device: str | None = None, dtype: str | None = None, log_level: str = "info",
          max_pending: int = DEFAULT_MAX_PENDING, read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
          keep_alive_s: int = DEFAULT_KEEP_ALIVE_S, max_cached_tools: int = MAX_CACHED_TOOLS) -> None:
    """Load the (process-wide) router for `checkpoint` and serve it until interrupted.

    `max_pending` bounds the completions waiting or being answered (past it, 429; see `create_app`). A client has
    `read_timeout_s` to send a request's head (else the connection is closed), then as long for its body (else 408);
    an idle connection is closed after `keep_alive_s`. `max_cached_tools` bounds the tools whose encodings are kept
    in memory (`ToolRouter`).
    """
    router = shared_router(checkpoint, device, dtype, max_cached_tools)
    app = create_app(router, api_key=api_key, max_pending=max_pending, read_timeout_s=read_timeout_s)
    uvicorn.Server(_server_config(app, read_timeout_s=read_timeout_s, keep_alive_s=keep_alive_s, host=host,
                                  port=port, log_level=log_level)).run()


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S,
                    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread (tests, notebooks, benchmarks); yields the `/v1` base URL.
    `read_timeout_s` bounds each request head and `keep_alive_s` idle connections, as in `serve`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP proto: asyncio sets NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_server_config(app, read_timeout_s=read_timeout_s, keep_alive_s=keep_alive_s,
                                           log_config=None, log_level="warning", access_log=False, lifespan="off",
                                           backlog=4096))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="toolformer-router-server",
                              daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread stopped before it started")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
