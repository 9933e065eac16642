"""Public result types of `ToolRouter.route`: `ToolCall` and `RouteResult` (pydantic models)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ToolCall(BaseModel):
    """One call chosen by the router: a unique id, an active tool's name and its validated arguments."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class RouteUsage(BaseModel):
    """What one route cost: tokens fed to the decoder, gist memory attended, cache traffic and time."""

    input_tokens: int = 0
    """Conversation tokens fed to the decoder (the tool schemas are not among them)."""
    output_tokens: int = 0
    """Tokens of the answer, forced ones included."""
    forced_tokens: int = 0
    """Output tokens the grammar forced and the decoder took in one pass (jump-forward)."""
    gist_tokens: int = 0
    """Memory slots attended by cross-attention: active tools x gists per tool."""
    active_tools: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    latency_s: float = 0.0


class RouteResult(BaseModel):
    """The router's decision for one query: one or more calls, or no call with the model's own short text."""

    calls: list[ToolCall] = Field(default_factory=list)
    text: str | None = None
    """The model's answer when it made no call; None when it called tools."""
    raw: str = ""
    """The decoded output exactly as the grammar accepted it."""
    finish_reason: Literal["stop", "length"] = "stop"
    """"length" when `max_new_tokens` ran out or shaped the end: calls closed within the closing reserve are
    kept (they parse and validate, but their last values may be cut short); a call that could not be closed
    is dropped and `text` is None."""
    model: str = ""
    call_margin: float | None = None
    """How strongly the model preferred calling over answering at the first token (logit difference before
    `call_bias`); None when `tool_choice` left no such choice."""
    argument_grounding: float | None = None
    """The share of the call list's checkable argument values stated in the conversation
    (`toolformer_router.grounding`); below `min_argument_grounding` the router answers instead of calling (this
    field then keeps the declined list's share). None without a completed call list or without checkable values."""
    request_coverage: float | None = None
    """The share of the last user message's content words found in the called tools' names, descriptions and
    parameters (`LexicalMatcher.coverage`); below `min_request_coverage` the router answers instead of calling
    (this field then keeps the declined list's share). None without a completed call list or content words."""
    tool_relevance: float | None = None
    """The lowest cosine similarity, under all-MiniLM-L6-v2, between the last user message and a called tool's
    "name: description" (`toolformer_router.relevance`); below `min_tool_relevance` the router answers instead of
    calling (this field then keeps the declined list's value). None without a completed call list, or when the
    veto cannot apply (`min_tool_relevance` None, `tool_choice` other than "auto"): then it is not computed."""
    usage: RouteUsage = Field(default_factory=RouteUsage)

    @property
    def is_call(self) -> bool:
        return bool(self.calls)


class RouteChunk(BaseModel):
    """One piece of a streamed route (`ToolRouter.stream`): the next `text` of a text answer, or, last, the whole
    `result`."""

    text: str = ""
    result: RouteResult | None = None
