"""`ToolRouter`: the public entry point — register tools, route queries (sync, batched, async)."""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cachetools
import llguidance
import orjson
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .backbone import load_backbone, router_home
from .batching import RequestBatcher
from .checkpoint import load_weights, read_config, save_checkpoint
from .checks import CallChecks, CallSupport
from .config import RouterConfig
from .decoding import (
    DecodeOutput,
    DecodeRequest,
    DecodingRules,
    LogitsProcessor,
    TokenClasses,
    constrained_greedy_decode,
)
from .enumerations import find_enumerations
from .errors import (
    InvalidQueryError,
    InvalidToolError,
    QueryTooLongError,
    TooManyToolsError,
    UnknownToolError,
)
from .gist_cache import EntryLayout, GistCache, ToolMemory
from .grammar import ToolChoice, ToolGrammar, resolve_tool_choice
from .grounding import ConversationText, drop_unstated_optionals
from .lexical import LexicalMatcher
from .messages import (
    Query,
    call_key,
    conversation_texts,
    executed_calls,
    normalize_messages,
    parse_call_list,
    render_prompt,
    render_prompt_text,
    selection_text,
)
from .modeling import GistMemory, ToolRouterModel, pad_right
from .relevance import ToolRelevance
from .schema import (
    MAX_CACHED_TOOLS,
    Tool,
    fit_tool_text,
    normalize_tool,
    normalize_tools,
    render_tool,
)
from .selection import Selection, ToolSelection
from .streaming import TextStream, answer_text, check_stop
from .types import RouteChunk, RouteResult, RouteUsage, ToolCall

logger = logging.getLogger(__name__)

PACKAGED_CHECKPOINTS = Path(__file__).parent / "checkpoints"
_PREPARED_TOOLS: cachetools.LRUCache[bytes, Tool] = cachetools.LRUCache(maxsize=MAX_CACHED_TOOLS)
"""Normalised, grammar-checked tools by their definitions' canonical JSON: both steps depend on the content
alone, so every router in the process shares them (an evaluation builds many routers over one catalog)."""
_PREPARED_TOOLS_LOCK = threading.Lock()


def checkpoint_folder(checkpoint: str | Path) -> Path:
    """The folder of a checkpoint: "default" is the packaged one, anything else a path."""
    return PACKAGED_CHECKPOINTS / "default" if str(checkpoint) == "default" else Path(checkpoint)



def _budget(value: Any, name: str) -> int:
    """A token budget given by a caller, as an int; `InvalidQueryError` for anything that is not a whole number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidQueryError(f"{name} must be a whole number of tokens, got {value!r:.40}")
    if isinstance(value, numbers.Integral) or (math.isfinite(value) and float(value).is_integer()):
        return int(value)  # int, numpy integers, whole floats
    raise InvalidQueryError(f"{name} must be a whole number of tokens, got {value!r:.40}")


@dataclass
class _Request:
    """One validated routing request, ready to batch."""

    messages: list[dict[str, Any]]
    tools: list[Tool]
    tool_choice: ToolChoice
    parallel_tool_calls: bool
    max_new_tokens: int
    max_text_tokens: int
    text: TextStream | None = None
    """Where the text answer goes as it is decoded (stop sequences, streaming); None: only into the result."""


class ToolRouter:
    """Routes queries to tool calls using cached per-tool gists and grammar-constrained decoding.

    Example:
        >>> router = ToolRouter.from_pretrained("default")
        >>> router.add_tools([{"name": "get_weather", "description": "Weather for a city",
        ...                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
        ...                                   "required": ["city"]}}])
        >>> router.route("What's the weather in Paris?").calls
        [ToolCall(id='call_…', name='get_weather', arguments={'city': 'Paris'})]
    """

    def __init__(
        self,
        model: ToolRouterModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        gist_cache: GistCache | None = None,
        name: str = "toolformer-router",
        max_batch_size: int = 32,
        batch_wait_s: float = 0.002,
        preload_relevance: bool = True,
        max_cached_tools: int = MAX_CACHED_TOOLS,
    ):
        """Use `from_pretrained` or `from_backbone`. `preload_relevance` loads the sentence encoder behind
        `min_tool_relevance` now when the checkpoint sets that veto (False: on the first route that needs it).
        `max_cached_tools` bounds this router's per-tool caches in memory (least recently used tools leave first:
        gists and cross-attention keys/values, schema texts, grammar rules, word lists, sentence vectors); a tool
        that left is recomputed, or read from the disk tier, when it is next active. The validated definitions
        that all routers of a process share are bounded by `schema.MAX_CACHED_TOOLS`."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.name = name
        self.gist_cache = gist_cache if gist_cache is not None else GistCache(None, max_memory_entries=max_cached_tools)
        self.max_batch_size = max_batch_size
        self.grammar = ToolGrammar(tokenizer, model.lm_head.out_features, max_cached_rules=max_cached_tools)
        self._eos_token_id = self.grammar.ll_tokenizer.eos_token
        self.token_texts = token_texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        """Each token id's text, decoded on its own."""
        self.token_classes = TokenClasses(token_texts)
        """The token masks the decoding rules use (built once per tokenizer)."""
        self._call_opening_tokens = self.token_classes.call_opening_ids
        self.lexical = LexicalMatcher(max_cached_tools=max_cached_tools)
        self.relevance = ToolRelevance(max_cached_tools=max_cached_tools)
        """The sentence encoder behind `min_tool_relevance`: loaded here when that veto is set (and
        `preload_relevance`), else on first use."""
        if self.config.uses_tool_relevance and preload_relevance:
            self.relevance.embedder
        self.selection = ToolSelection(self.model, tokenizer, self.config, self.lexical)
        """The selection stage: which tool each call names (`toolformer_router.selection`)."""
        self.checks = CallChecks(self.config, self.lexical, self.relevance)
        """The check stage: a call list's support and the vetoes (`toolformer_router.checks`)."""
        self._registry: OrderedDict[str, Tool] = OrderedDict()
        self._tool_texts: cachetools.LRUCache[tuple[str, int], str] = cachetools.LRUCache(maxsize=max_cached_tools)
        self._matchers: cachetools.LRUCache[tuple, llguidance.LLMatcher] = cachetools.LRUCache(maxsize=64)
        self._assembled: cachetools.LRUCache[tuple, tuple[torch.Tensor, torch.Tensor]] = cachetools.LRUCache(4)
        self._model_lock = threading.RLock()
        self._registry_lock = threading.RLock()
        self._batcher = RequestBatcher(lambda requests: self._route_requests(requests), max_batch_size=max_batch_size,
                                       wait_s=batch_wait_s)
        context = getattr(model.backbone_config, "max_position_embeddings", None) or 2**31
        self.max_context = context
        self._max_token_bytes = max(len(piece.encode("utf-8", "replace")) for piece in tokenizer.get_vocab())
        """The most bytes of text one token stands for (its vocabulary's longest piece in UTF-8, which in byte-level
        BPE and SentencePiece is at least the bytes it covers): a text of more bytes than `limit` times this is
        more than `limit` tokens, without tokenizing it."""

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        checkpoint: str | Path = "default",
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        cache_path: str | Path | None = None,
        disk_cache: bool = True,
        **kwargs: Any,
    ) -> ToolRouter:
        """Load a router checkpoint folder, or "default" (the packaged trained checkpoint).

        Args:
            device: "cuda", "cpu", ...; default CUDA when available.
            dtype: torch dtype or its name; default bfloat16 on CUDA, float32 on the CPU.
            cache_path: SQLite file of the on-disk gist cache (default `$TOOLFORMER_ROUTER_HOME/gists.sqlite`).
            disk_cache: False keeps gists in memory only.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        folder = checkpoint_folder(checkpoint)
        config = read_config(folder)  # a CheckpointError names what is missing or wrong
        backbone, tokenizer = load_backbone(config.backbone, dtype=torch.float32)
        model = ToolRouterModel(backbone, config)
        load_weights(model, folder)
        model.to(device=device, dtype=dtype)
        if disk_cache:
            memory_bound = kwargs.get("max_cached_tools", MAX_CACHED_TOOLS)
            kwargs.setdefault("gist_cache", GistCache(cache_path or router_home() / "gists.sqlite",
                                                      max_memory_entries=memory_bound))
        name = kwargs.pop("name", f"toolformer-router/{folder.name}")
        return cls(model, tokenizer, name=name, **kwargs)

    @classmethod
    def from_backbone(
        cls,
        backbone: PreTrainedModel | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
        config: RouterConfig | None = None,
        **kwargs: Any,
    ) -> ToolRouter:
        """A router with fresh (untrained) modules around a backbone model object or name."""
        config = config or RouterConfig()
        if isinstance(backbone, str):
            config = config.model_copy(update={"backbone": backbone})
            backbone, tokenizer = load_backbone(backbone)
        if tokenizer is None:
            raise ValueError("a tokenizer is required with a backbone model object")
        return cls(ToolRouterModel(backbone, config), tokenizer, **kwargs)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a checkpoint folder (config.json + router.safetensors)."""
        return save_checkpoint(self.model, folder)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    # ----------------------------------------------------------------------------------- tools
    @property
    def tools(self) -> list[Tool]:
        """The registered tools, in registration order."""
        with self._registry_lock:
            return list(self._registry.values())

    def add_tools(self, tools: Iterable[Any], *, show_progress: bool | None = None) -> list[Tool]:
        """Register tools (a tool whose name is registered already is replaced) and encode the new ones (their
        gists and, with `lexical_weight`, the words the word match reads).

        All-or-nothing: on any error the registered set is exactly what it was. `show_progress`: a progress
        bar while encoding (default: when 64 or more tools need encoding).
        """
        new = self.prepare_tools(tools)
        with self._registry_lock:
            merged = OrderedDict(self._registry)
            for tool in new:
                merged[tool.name] = tool
            if len(merged) > self.config.max_tools:
                raise TooManyToolsError(f"{len(merged)} tools would be registered; max_tools={self.config.max_tools}")
            self.tool_memories(new, show_progress=show_progress)  # encodes what is not cached yet; raises before the registry changes
            if self.config.lexical_weight:
                with self._model_lock:  # the word match's per-tool cache, ready before the first route
                    for tool in new:
                        self.lexical.tool_words(tool)
            self._registry = merged
        return new

    def remove_tools(self, names: Iterable[str]) -> None:
        """Unregister tools by name; an unknown name raises `UnknownToolError` and removes nothing."""
        names = [names] if isinstance(names, str) else list(names)
        with self._registry_lock:
            unknown = [n for n in names if n not in self._registry]
            if unknown:
                raise UnknownToolError(f"tools not registered: {unknown}")
            for name in names:
                del self._registry[name]

    def prepare_tools(self, tools: Iterable[Any]) -> list[Tool]:
        """Normalise and validate tool definitions (memoised on their content): cheap size checks first, then the
        encoder's length (`SchemaTooLongError`) and the grammar; no encoding."""
        if isinstance(tools, (str, bytes, dict)) or not isinstance(tools, Iterable):
            raise InvalidToolError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
        tools = list(tools)
        if len(tools) > self.config.max_tools:
            raise TooManyToolsError(f"{len(tools)} tools given; max_tools={self.config.max_tools}")
        prepared, unchecked = [], []
        for tool in tools:
            if isinstance(tool, Tool):
                prepared.append(tool)
                continue
            key = self._content_key(tool)
            with _PREPARED_TOOLS_LOCK:
                normalized = _PREPARED_TOOLS.get(key)
            if normalized is None:
                normalized = normalize_tool(tool)
                unchecked.append((key, normalized))
            prepared.append(normalized)
        if unchecked:
            self.tool_texts([tool for _, tool in unchecked])  # the encoder's length, counted in one batch, first
            for key, tool in unchecked:
                self.grammar.check_tool(tool)
                with _PREPARED_TOOLS_LOCK:
                    _PREPARED_TOOLS[key] = tool
        return normalize_tools(prepared)  # duplicate-name check

    def check_tools(self, tools: Iterable[Any]) -> list[Tool]:
        """`prepare_tools` plus the encoder's length check: raises a `ToolRouterError` for any tool this router
        cannot take (invalid, not enforceable by the grammar, or over `max_schema_tokens`)."""
        prepared = self.prepare_tools(tools)
        self.tool_texts(prepared)
        return prepared

    @staticmethod
    def _content_key(tool: Any) -> bytes:
        try:
            return orjson.dumps(tool, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError as error:
            raise InvalidToolError(f"tool definition is not JSON-serialisable: {error}") from None

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the backbone's tokenizer (no special tokens)."""
        return self.count_tokens_many([text])[0]

    def count_tokens_many(self, texts: list[str]) -> list[int]:
        """`count_tokens` of each text, in one batched tokenizer call."""
        return self.tokenizer(texts, add_special_tokens=False, return_length=True)["length"] if texts else []

    def tool_text(self, tool: Tool) -> str:
        """The (possibly description-truncated) schema text the encoder reads for `tool`."""
        return self.tool_texts([tool])[0]

    def tool_texts(self, tools: Sequence[Tool]) -> list[str]:
        """`tool_text` of each tool, memoised by schema hash; the full renderings of tools not seen yet are
        counted in one batched tokenizer call, and only those over `max_schema_tokens` are shortened.
        Raises `SchemaTooLongError` for a tool that does not fit even without descriptions."""
        max_tokens = self.config.max_schema_tokens
        texts = {tool.schema_hash: self._tool_texts.get((tool.schema_hash, max_tokens)) for tool in tools}
        new = list({tool.schema_hash: tool for tool in tools if texts[tool.schema_hash] is None}.values())
        if new:
            rendered = [render_tool(tool) for tool in new]
            lengths = self.count_tokens_many(rendered)
            fitting = [(tool, text) for tool, text, length in zip(new, rendered, lengths) if length <= max_tokens]
            too_long = [(tool, None) for tool, length in zip(new, lengths) if length > max_tokens]
            for tool, text in fitting + too_long:  # the ones that fit are kept even if a later one raises
                text = text or fit_tool_text(tool, self.count_tokens_many, max_tokens)
                self._tool_texts[(tool.schema_hash, max_tokens)] = texts[tool.schema_hash] = text
        return [texts[tool.schema_hash] for tool in tools]

    @torch.no_grad()
    def tool_memories(
        self, tools: list[Tool], *, batch_size: int = 32, show_progress: bool | None = None
    ) -> tuple[list[ToolMemory], int, int]:
        """Each tool's cached memory (encoding only tools not in the cache); returns (entries, hits, misses)."""
        fingerprint = self.model.memory_fingerprint()
        found = self.gist_cache.get_many([t.schema_hash for t in tools], fingerprint, self.device,
                                         EntryLayout.of(self.model))
        missing = list({t.schema_hash: t for t in tools if t.schema_hash not in found}.values())
        if missing:
            texts = self.tool_texts(missing)  # may raise SchemaTooLongError, before any work
            order = sorted(range(len(missing)), key=lambda i: len(texts[i]))  # similar lengths pad less
            missing, texts = [missing[i] for i in order], [texts[i] for i in order]
            with self._model_lock, tqdm(total=len(missing), desc="encoding tools", unit="tool",
                                        disable=not (show_progress if show_progress is not None
                                                     else len(missing) >= 64)) as progress:
                for start in range(0, len(missing), batch_size):
                    # padded here, not by the tokenizer: its padding setting is shared state, and other threads
                    # (a caller's `prepare_tools`) count tokens with the same tokenizer at the same time
                    token_ids = self.tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
                    input_ids, attention_mask = pad_right(token_ids, device=self.device,
                                                          pad_id=self.tokenizer.pad_token_id or 0)
                    gists = self.model.encode_tools(input_ids, attention_mask)
                    memory = self.model.project_memory(gists)
                    entries = {tool.schema_hash: ToolMemory(gists[i].clone(), memory[i].clone())
                               for i, tool in enumerate(missing[start : start + batch_size])}
                    self.gist_cache.put_many(entries, fingerprint)
                    found.update(entries)
                    progress.update(len(entries))
        return [found[t.schema_hash] for t in tools], len(tools) - len(missing), len(missing)

    # ----------------------------------------------------------------------------------- routing
    def route(
        self,
        query: Query,
        tools: Iterable[Any] | None = None,
        *,
        tool_choice: ToolChoice = None,
        parallel_tool_calls: bool = True,
        max_new_tokens: int | None = None,
        max_text_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        logits_processor: LogitsProcessor | None = None,
    ) -> RouteResult:
        """Route one query (a string or a list of chat messages) over the registered tools, or `tools`.

        Args:
            tools: overrides the registered set for this call only (still through the gist cache).
            tool_choice: "auto"/None (call or answer), "required"/"any"/True (must call), "none" (answer),
                a tool name or `{"type": "function", "function": {"name": ...}}` (must call that tool).
            parallel_tool_calls: False allows exactly one call.
            max_new_tokens: output budget (default `config.max_new_tokens`).
            max_text_tokens: budget of a text answer (default `config.max_text_tokens`, or `max_new_tokens` when
                that is given); 0 decides only: a "no call" result then has `text == ""` (for callers that hand
                such turns to another model).
            stop: up to 4 sequences; a text answer ends before the first of them (finish_reason "stop").
        """
        request = self._request(query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens, stop)
        return self._route_requests([request], logits_processor=logits_processor)[0]

    def route_batch(
        self,
        queries: Sequence[Query],
        tools: Iterable[Any] | None = None,
        *,
        tool_choice: ToolChoice = None,
        parallel_tool_calls: bool = True,
        max_new_tokens: int | None = None,
        max_text_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
        logits_processor: LogitsProcessor | None = None,
    ) -> list[RouteResult]:
        """Route several queries together (one batched decode per `max_batch_size` queries)."""
        tools = None if tools is None else self.prepare_tools(tools)
        requests = [self._request(q, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens, stop)
                    for q in queries]
        results = []
        for start in range(0, len(requests), self.max_batch_size):
            results += self._route_requests(requests[start : start + self.max_batch_size], logits_processor)
        return results

    async def aroute(
        self,
        query: Query,
        tools: Iterable[Any] | None = None,
        *,
        tool_choice: ToolChoice = None,
        parallel_tool_calls: bool = True,
        max_new_tokens: int | None = None,
        max_text_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> RouteResult:
        """Async `route`: never blocks the event loop; concurrent calls are decoded together in one batch.

        Cancelling the awaiting task drops its result; the batch goes on for the other requests.
        """
        request = await asyncio.to_thread(self._request, query, tools, tool_choice, parallel_tool_calls, max_new_tokens,
                                          max_text_tokens, stop)
        return await self._batcher.submit(request)

    def stream(
        self,
        query: Query,
        tools: Iterable[Any] | None = None,
        *,
        tool_choice: ToolChoice = None,
        parallel_tool_calls: bool = True,
        max_new_tokens: int | None = None,
        max_text_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Iterator[RouteChunk]:
        """`route`, streamed: a text answer arrives in pieces (`RouteChunk.text`) as it is decoded; the last chunk
        carries the whole `RouteResult` (calls, usage, finish reason), whose `text` is the pieces joined.

        Calls come with the result, not before: the checks after decoding (the vetoes, the rule against repeating
        a call of the turn) may still turn a decoded call list into a text answer. Leaving the loop early ends
        the text answer at its next token.
        """
        chunks: queue.Queue[RouteChunk | BaseException] = queue.Queue()
        request = self._request(query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens, stop,
                                emit=lambda text: chunks.put(RouteChunk(text=text)))

        def serve() -> None:
            try:
                chunks.put(RouteChunk(result=self._route_requests([request])[0]))
            except BaseException as error:  # re-raised in the consumer's thread
                chunks.put(error)

        threading.Thread(target=serve, name="toolformer-router-stream", daemon=True).start()
        try:
            while True:
                chunk = chunks.get()
                if isinstance(chunk, BaseException):
                    raise chunk
                yield chunk
                if chunk.result is not None:
                    return
        finally:
            request.text.cancel()

    async def astream(
        self,
        query: Query,
        tools: Iterable[Any] | None = None,
        *,
        tool_choice: ToolChoice = None,
        parallel_tool_calls: bool = True,
        max_new_tokens: int | None = None,
        max_text_tokens: int | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> AsyncIterator[RouteChunk]:
        """Async `stream`: concurrent streams and `aroute` calls are decoded together in one batch."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[RouteChunk] = asyncio.Queue()
        request = await asyncio.to_thread(
            self._request, query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens, stop,
            emit=lambda text: loop.call_soon_threadsafe(chunks.put_nowait, RouteChunk(text=text)))
        routed = asyncio.ensure_future(self._batcher.submit(request))
        try:
            while not routed.done():
                waiting = asyncio.ensure_future(chunks.get())
                await asyncio.wait({waiting, routed}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    yield waiting.result()
                else:
                    waiting.cancel()
            while not chunks.empty():  # pieces delivered before the result, not read yet
                yield chunks.get_nowait()
            yield RouteChunk(result=routed.result())
        finally:
            request.text.cancel()
            routed.cancel()

    @torch.no_grad()
    def rank_tools(self, query: Query, tools: Iterable[Any] | None = None) -> list[tuple[str, float]]:
        """The active tools (registered, or `tools`) ordered by their selection score for `query`, best first:
        `[(name, score), ...]`; score = `ToolSelector` logit + `lexical_weight` x BM25 match of the last user
        message. In "selector" mode the first call names the best allowed one."""
        messages = normalize_messages(query)
        active = self.tools if tools is None else self.prepare_tools(tools)
        if not active:
            return []
        with self._model_lock:
            scores = self.selection.scores([messages], [active], [self._request_memory(active)[1]])[0]
        order = scores.argsort(descending=True).tolist()
        return [(active[i].name, float(scores[i])) for i in order]

    def close(self) -> None:
        """Stop the background batching thread (started by the first `aroute`)."""
        self._batcher.close()

    # ----------------------------------------------------------------------------------- internals
    def _request(self, query, tools, tool_choice, parallel_tool_calls, max_new_tokens, max_text_tokens=None,
                 stop=None, emit: Callable[[str], None] | None = None) -> _Request:
        messages = normalize_messages(query)
        active = self.tools if tools is None else self.prepare_tools(tools)
        budget = self.config.max_new_tokens if max_new_tokens is None else _budget(max_new_tokens, "max_new_tokens")
        if not 1 <= budget < self.max_context:
            raise InvalidQueryError(f"max_new_tokens must be at least 1 and less than the model's context of "
                                    f"{self.max_context} tokens, got {budget}")
        text_budget = (self.config.max_text_tokens if max_new_tokens is None else budget) \
            if max_text_tokens is None else _budget(max_text_tokens, "max_text_tokens")
        if text_budget < 0:
            raise InvalidQueryError("max_text_tokens must be at least 0")
        stop = check_stop(stop)
        text = TextStream(self.tokenizer, stop, emit) if stop or emit is not None else None
        request = _Request(messages, active, tool_choice, bool(parallel_tool_calls), budget, min(budget, text_budget),
                           text)
        resolve_tool_choice(tool_choice, active)  # a bad tool_choice fails here, not inside a batch
        return request

    def prompt_ids(self, messages: list[dict[str, Any]], *, router_instructions: bool = True) -> list[int]:
        """The decoder's prompt for normalised `messages` (`render_prompt`); `router_instructions=False` leaves the
        router's system prompt out (the conversation's own system messages stay)."""
        return render_prompt(self.tokenizer, messages, self.config.system_prompt if router_instructions else None)

    def _fitting_prompt(self, request: _Request) -> list[int]:
        """`prompt_ids` of the request, or `QueryTooLongError` where it does not fit `max_query_tokens` and the
        context. A text of more bytes than the limit's tokens can hold is refused before it is tokenized (that
        takes about half a second a megabyte)."""
        limit = min(self.config.max_query_tokens, self.max_context - request.max_new_tokens)
        fits = f"at most {limit} fit (max_query_tokens={self.config.max_query_tokens}, context {self.max_context})"
        text = render_prompt_text(self.tokenizer, request.messages, self.config.system_prompt)
        size = len(text.encode("utf-8"))
        if size > limit * self._max_token_bytes:
            raise QueryTooLongError(f"the conversation is {size:,} bytes, more than {limit} tokens of at most "
                                    f"{self._max_token_bytes} bytes hold; {fits}")
        prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(prompt) > limit:
            raise QueryTooLongError(f"the conversation is {len(prompt)} tokens; {fits}")
        return list(prompt)

    def _matcher(self, request: _Request) -> llguidance.LLMatcher:
        key = (tuple(t.schema_hash for t in request.tools), str(request.tool_choice), request.parallel_tool_calls)
        matcher = self._matchers.get(key)
        if matcher is None:
            matcher = self.grammar.matcher(request.tools, request.tool_choice, request.parallel_tool_calls)
            self._matchers[key] = matcher
        return matcher.deep_copy()

    @torch.no_grad()  # selection and decoding alike: routing never builds an autograd graph
    def _route_requests(
        self, requests: list[_Request], logits_processor: LogitsProcessor | None = None
    ) -> list[RouteResult]:
        """The route path, each stage once per batch: prepare (prompt, memory, grammar, the request's call
        settings) → select → decode → check → answer in text where needed → results."""
        started = time.perf_counter()
        with self._model_lock:
            decode_requests, usages, gist_sets, modes = [], [], [], []
            for request in requests:
                if len(request.tools) > self.config.max_tools:
                    raise TooManyToolsError(f"{len(request.tools)} active tools; max_tools={self.config.max_tools}")
                prompt = self._fitting_prompt(request)
                modes.append(resolve_tool_choice(request.tool_choice, request.tools)[0])
                if modes[-1] == "none" and self._answers_without_tools(request):  # text it must be: one tool-free pass
                    decode_requests.append(self._text_pass(request))
                    gist_sets.append(None)
                    usages.append(RouteUsage(input_tokens=len(decode_requests[-1].prompt_ids),
                                             active_tools=len(request.tools)))
                    continue
                memory, gists, hits, misses = self._request_memory(request.tools)
                gist_sets.append(gists)
                # a text decision with tools active is answered again without them: decide only here
                text_budget = 0 if self._answers_without_tools(request) else request.max_text_tokens
                decode_requests.append(DecodeRequest(prompt, memory, self._matcher(request), request.max_new_tokens,
                                                     text_budget, text_sink=self._text_sink(request, text_budget)))
                usages.append(RouteUsage(input_tokens=len(prompt), active_tools=len(request.tools),
                                         gist_tokens=len(request.tools) * self.config.num_gists,
                                         cache_hits=hits, cache_misses=misses))
            rows = [i for i, (request, mode) in enumerate(zip(requests, modes)) if request.tools
                    and mode in ("auto", "required") and self.config.tool_selection == "selector"]
            selections = [Selection() for _ in requests]
            chosen = self.selection.select([requests[i].messages for i in rows], [requests[i].tools for i in rows],
                                           [gist_sets[i] for i in rows], [requests[i].parallel_tool_calls for i in rows])
            for i, selection in zip(rows, chosen):
                selections[i] = selection
            for decode_request, selection, request in zip(decode_requests, selections, requests):
                decode_request.call_bias = self.config.call_thresholds(len(request.tools)).call_bias
                decode_request.first_call_tool = selection.first
                decode_request.planned_call_tools = selection.planned
                if (self.config.cover_enumerations and request.parallel_tool_calls
                        and not executed_calls(request.messages)):
                    decode_request.enumerations = find_enumerations(selection_text(request.messages))
            outputs = self._decode(decode_requests, logits_processor)
            calls = [self._new_calls(request, mode, output) for request, mode, output in zip(requests, modes, outputs)]
            supports = [self.checks.support(request.messages, request.tools, found, relevance=mode == "auto")
                        if found else CallSupport() for request, mode, found in zip(requests, modes, calls)]
            self._answer_in_text(requests, modes, outputs, calls, usages, supports, logits_processor)
        latency = time.perf_counter() - started
        results = []
        for request, output, found, usage, support in zip(requests, outputs, calls, usages, supports):
            usage.output_tokens, usage.forced_tokens, usage.latency_s = len(output.token_ids), output.forced_tokens, latency
            results.append(self._result(request, output, found, usage, support))
        return results

    @staticmethod
    def _text_sink(request: _Request, text_budget: int) -> Callable[[list[int]], bool] | None:
        """The request's `TextStream.feed` for a decoding pass that may write its text answer (a new pass)."""
        if request.text is None or not text_budget:
            return None
        request.text.start()
        return request.text.feed

    def _answers_without_tools(self, request: _Request) -> bool:
        """Whether a text answer to `request` is written by the backbone without the tools (`answer_without_tools`
        with tools active and a text budget): the first pass then only decides."""
        return bool(self.config.answer_without_tools and request.tools and request.max_text_tokens)

    def _is_call(self, output: DecodeOutput) -> bool:
        return bool(output.token_ids) and output.token_ids[0] in self._call_opening_tokens

    def _new_calls(self, request: _Request, mode: str, output: DecodeOutput) -> list[dict[str, Any]] | None:
        """The completed call list of `output` (None when it is text or was cut off), less, with `tool_choice`
        "auto", every call whose result is already in the turn (same name and arguments: `executed_calls`), so that
        an agent loop never runs one call twice; [] when every call was such a repeat."""
        calls = parse_call_list(self.tokenizer.decode(output.token_ids)) \
            if output.stopped and self._is_call(output) else None
        if calls is None or mode != "auto":
            return calls
        done = {call_key(call) for call in executed_calls(request.messages)}
        return [call for call in calls if call_key(call) not in done]

    def _decode(self, requests: list[DecodeRequest], logits_processor: LogitsProcessor | None) -> list[DecodeOutput]:
        config = self.config
        rules = DecodingRules(self.token_classes, config.closing_reserve_tokens, config.loop_guard_min_span,
                              config.end_with_plan)
        return constrained_greedy_decode(
            self.model, requests, rules, memory_template=self._memory_template(),
            eos_token_id=self._eos_token_id, pad_token_id=self.tokenizer.pad_token_id or 0,
            logits_processor=logits_processor,
        )

    def _answer_in_text(self, requests: list[_Request], modes: list[str], outputs: list[DecodeOutput],
                        calls: list[list[dict[str, Any]] | None], usages: list[RouteUsage],
                        supports: list[CallSupport], logits_processor: LogitsProcessor | None) -> None:
        """Write, in one batch, the text answers the first pass only decided (in place, `calls` set to None): a
        text decision while tools were active (`answer_without_tools`), a call list whose calls all ran already in
        this turn, and a call list declined for its support (`min_argument_grounding`, `min_request_coverage`,
        `min_tool_relevance`); empty text with `max_text_tokens` 0. The answer is the backbone's own reply,
        without the tools' memory (trained to steer calls, not prose) and without the router's instructions."""
        again: list[int] = []
        second: list[DecodeRequest] = []
        for i, (request, mode, output) in enumerate(zip(requests, modes, outputs)):
            declined = calls[i] == [] or (mode == "auto" and self.checks.declines(len(request.tools), supports[i]))
            if declined:
                calls[i] = None
            if declined and not request.max_text_tokens:
                outputs[i] = DecodeOutput(stopped=True, call_margin=output.call_margin)
                continue
            if not (declined or (not self._is_call(output) and mode != "none" and self._answers_without_tools(request))):
                continue
            redo = self._text_pass(request)
            usages[i].input_tokens += len(redo.prompt_ids)
            again.append(i)
            second.append(redo)
        for i, redone in zip(again, self._decode(second, logits_processor) if second else []):
            redone.call_margin = outputs[i].call_margin
            outputs[i] = redone

    def _text_pass(self, request: _Request) -> DecodeRequest:
        """The pass that writes a text answer with tools active (`answer_without_tools`): the backbone's own reply,
        without the tools' memory and without the router's instructions."""
        no_tools = _Request(request.messages, [], "none", request.parallel_tool_calls, request.max_new_tokens,
                            request.max_text_tokens)
        return DecodeRequest(self.prompt_ids(request.messages, router_instructions=False), self._memory_template(),
                             self._matcher(no_tools), request.max_new_tokens, request.max_text_tokens,
                             text_sink=self._text_sink(request, request.max_text_tokens))

    def _memory_template(self) -> torch.Tensor:
        """An empty (L, 2, kv_heads, 0, head_dim) memory: the layout on the model's device, for no tools."""
        block = next(iter(self.model.cross_attention.values()))
        return torch.zeros(
            len(self.model.cross_attention), 2, block.num_kv_heads, 0, block.head_dim,
            device=self.device, dtype=self.model.lm_head.weight.dtype,
        )

    def _request_memory(self, tools: list[Tool]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(flattened memory (L, 2, kvh, tools·K, hd), gists (tools, K, d), cache hits, misses) of a tool set;
        recent sets are kept assembled."""
        if not tools:
            gists = self.model.lm_head.weight.new_zeros(0, self.config.num_gists, self.model.backbone_config.hidden_size)
            return self._memory_template(), gists, 0, 0
        key = (self.model.memory_fingerprint(), tuple(t.schema_hash for t in tools))
        assembled = self._assembled.get(key)
        if assembled is not None:
            return *assembled, len(tools), 0
        entries, hits, misses = self.tool_memories(tools)
        assembled = (GistMemory.flatten(torch.stack([entry.memory for entry in entries])),
                     torch.stack([entry.gists for entry in entries]))
        self._assembled[key] = assembled
        return *assembled, hits, misses

    def _result(self, request: _Request, output: DecodeOutput, calls: list[dict[str, Any]] | None,
                usage: RouteUsage, support: CallSupport) -> RouteResult:
        raw = self.tokenizer.decode(output.token_ids, skip_special_tokens=False)
        finish_reason = "stop" if output.stopped and not output.closed_early else "length"
        result = RouteResult(raw=raw, finish_reason=finish_reason, model=self.name, usage=usage,
                             call_margin=output.call_margin, argument_grounding=support.argument_grounding,
                             request_coverage=support.request_coverage, tool_relevance=support.tool_relevance)
        if calls is not None and self.config.drop_unstated_optionals:
            calls = drop_unstated_optionals(calls, {tool.name: tool.parameters for tool in request.tools},
                                            ConversationText(conversation_texts(request.messages)))
        if calls is not None:
            result.calls = [ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=call["name"], arguments=call["arguments"])
                            for call in calls]
        elif not raw.startswith("["):
            result.text = answer_text(raw, request.text.stop if request.text is not None else ())
            if request.text is not None:
                request.text.close(result.text)
        return result
