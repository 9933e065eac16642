"""Greedy, grammar-constrained, batched decoding with a KV cache and jump-forward.

Each step feeds every unfinished request its pending tokens (the token just chosen plus whatever the
grammar forces after it), right-padded to the longest; padding is masked out of the attention for good,
so requests advance by different numbers of tokens in one forward pass. Finished requests leave the
batch (their rows are dropped from the cache and the gist memory).

Each row keeps a `CallListState` (where its output stands: in a call's name, in its arguments, between
calls) and a `LoopGuard`, both fed each token once. The rules that steer a call list read them
(`DecodingRules.steer`): the call's name (the selector's choice and the clause plan), whether the list may
end or go on (the plan, the request's enumerations), and the budget's end — in the last `closing_reserve`
tokens the decoder prefers tokens that only close strings, lists and objects, so the call completes and
validates instead of being cut. Greedy decoding of a small model can fall into a loop inside a free value
("1000000…", the same list item again and again): `LoopGuard` vetoes the token that would carry a
repetition on. The grammar's choice always wins over every rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import llguidance
import llguidance.torch
import torch

from .call_state import CallListState
from .enumerations import Enumeration, enumeration_open, enumeration_unfinished
from .modeling import GistMemory, ToolRouterModel

LogitsProcessor = Callable[[torch.Tensor], torch.Tensor]
_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)
_EXECUTOR = llguidance.LLExecutor()
"""Fills the rows' token masks in parallel threads."""
_SPARSE_HEAD_SHARE = 8
"""The output head computes only the allowed tokens' logits when they are at most 1/8 of the vocabulary."""


@dataclass
class DecodeRequest:
    """One sequence to decode: prompt token ids, its tools' flattened memory (L, 2, kvh, tools·K, hd), its matcher."""

    prompt_ids: list[int]
    tool_memory: torch.Tensor
    matcher: llguidance.LLMatcher
    max_new_tokens: int
    max_text_tokens: int | None = None
    """A tighter budget once the output turns out to be a text answer rather than calls (0: stop there)."""
    first_call_tool: str | None = None
    """The tool the first call names, if the grammar allows it (the best selection score); None: free."""
    planned_call_tools: tuple[str, ...] = ()
    """Tools the request's clauses ask for: each later call names the first of them not named yet."""
    enumerations: tuple[Enumeration, ...] = ()
    """The request's enumerations ("Paris and Rome"): while the calls take some items of one and not others,
    the list does not end (`enumeration_unfinished`)."""
    call_bias: float = 0.0
    """Added to the call-opening logits at the first token: below 0, fewer calls."""
    text_sink: Callable[[list[int]], bool] | None = None
    """Fed each step's new tokens of a text answer as they are decoded (`TextStream.feed`); returning False ends
    the answer there (a stop sequence appeared, or nobody reads on)."""


@dataclass
class DecodeOutput:
    token_ids: list[int] = field(default_factory=list)
    forced_tokens: int = 0
    stopped: bool = False
    """True when the grammar completed (or EOS ended a text answer); False when the budget ran out."""
    closed_early: bool = False
    """True when the closing reserve was entered: the output completed, but the budget shaped its end."""
    call_margin: float | None = None
    """Best call-opening logit minus best text logit at the first free token (None when the grammar left no
    choice between calling and answering); the request's `call_bias` is added before deciding."""


class LoopGuard:
    """Vetoes the next token when it would extend a repetition at the end of one row's output.

    A repetition of period p is the output's tail equal to itself shifted by p tokens. The token that
    continues it is vetoed once the repeated tail would cover more than two periods (a third copy of a
    list item or phrase) and at least `min_span` tokens (so "1000", "00:00:00" or a value given twice stay
    possible). Fed each token once: per period, the length of the repeated tail is kept up to date.
    """

    def __init__(self, min_span: int = 12, max_period: int = 48):
        self.min_span, self.max_period = min_span, max_period
        self.history: list[int] = []
        self._runs = [0] * (max_period + 1)  # per period p: trailing positions i with history[i] == history[i-p]

    def feed(self, token: int) -> None:
        history = self.history
        history.append(token)
        last = len(history) - 1
        for period in range(1, min(self.max_period, last) + 1):
            self._runs[period] = self._runs[period] + 1 if history[last - period] == token else 0

    def vetoed(self) -> set[int]:
        """Token ids that would continue a repetition at the end of the output."""
        n, history = len(self.history), self.history
        return {history[n - period] for period in range(1, min(self.max_period, n // 2) + 1)
                if self._runs[period] + 1 + period >= max(2 * period + 1, self.min_span)}


class TokenClasses:
    """Per-tokenizer (vocab,) bool masks the rules use, built once from each token's text: the tokens that open
    a call list; those that only close a string, or only close lists and objects; and, per bracket depth of a
    list step (1: between calls, 2: in a call whose arguments closed, 3: in its arguments), the tokens that go
    on with the list (`}},`, `},`, `,`) and those that end it (the same braces, then `]`)."""

    def __init__(self, token_texts: list[str]):
        self.texts = token_texts
        self.call_opening = torch.tensor([t.startswith("[") for t in token_texts])
        self.call_opening_ids = frozenset(self.call_opening.nonzero().flatten().tolist())
        self.string_closers = torch.tensor([t[:1] == '"' and not t.strip('"]}') for t in token_texts])
        self.structure_closers = torch.tensor([bool(t) and not t.strip("]}") for t in token_texts])
        self.continuers = {depth: torch.tensor([_goes_on_with_list(t, depth) for t in token_texts])
                           for depth in (1, 2, 3)}
        self.enders = {depth: torch.tensor([_ends_list(t, depth) for t in token_texts]) for depth in (1, 2, 3)}


def _goes_on_with_list(text: str, depth: int) -> bool:
    """True when `text`, read at list step `depth`, closes the call and reaches the "," that goes on."""
    head, comma, _ = text.partition(",")
    return bool(comma) and "".join(head.split()) == "}" * (depth - 1)


def _ends_list(text: str, depth: int) -> bool:
    """True when `text`, read at list step `depth`, closes the call and the list."""
    return "".join(text.split()).startswith("}" * (depth - 1) + "]")


@dataclass
class DecodingRules:
    """The rules that steer a call list, each reading the row's `CallListState`; `steer` applies them to the
    row's allowed tokens. `closing_reserve` 0 and `loop_guard_min_span` 0 turn those rules off."""

    tokens: TokenClasses
    closing_reserve: int = 24
    loop_guard_min_span: int = 12
    end_with_plan: bool = False
    """With a plan of two or more tools, the list ends once each has a call and no enumeration is half covered."""

    def new_loop_guard(self) -> LoopGuard | None:
        return LoopGuard(self.loop_guard_min_span) if self.loop_guard_min_span else None

    def closing_engaged(self, remaining: int, budget: int) -> bool:
        """True within the closing reserve (at most a quarter of the budget) of the budget's end."""
        return self.closing_reserve > 0 and remaining <= min(self.closing_reserve, budget // 4)

    def call_names(self, state: CallListState, request: DecodeRequest) -> tuple[str, ...]:
        """The names the call being named may take: the first call the request's `first_call_tool`, a later one
        the first of its `planned_call_tools` no call has named yet; () when that call is free."""
        if not state.names:
            return (request.first_call_tool,) if request.first_call_tool is not None else ()
        return tuple(name for name in request.planned_call_tools if name not in state.names)[:1]

    def spell(self, prefix: str, names: Sequence[str], allowed: torch.Tensor) -> torch.Tensor | None:
        """(vocab,) bool subset of `allowed` that spells on one of `names` after `prefix` (or closes it); None
        when the prefix leaves the names behind or the grammar allows none."""
        rests = [target[len(prefix):] for target in (f'{name}"' for name in names) if target.startswith(prefix)]
        if not rests:
            return None
        keep = torch.zeros_like(allowed)
        for token in allowed.nonzero().flatten().tolist():
            text = self.tokens.texts[token]
            if text and any(rest.startswith(text) or text.startswith(rest) for rest in rests):
                keep[token] = True
        return keep if keep.any() else None

    def steer(self, state: CallListState, request: DecodeRequest, allowed: torch.Tensor, remaining: int,
              budget: int) -> tuple[torch.Tensor, bool]:
        """(the row's allowed tokens after the call-list rules, whether the closing reserve shaped them)."""
        prefix = state.name_prefix
        if prefix is not None:
            names = self.call_names(state, request)
            spelled = self.spell(prefix, names, allowed) if names else None
            if spelled is not None:
                allowed = spelled
        tokens = self.tokens
        depth = state.list_step() if request.planned_call_tools or request.enumerations else None
        if self.closing_engaged(remaining, budget):
            closers = tokens.string_closers if state.in_string else tokens.structure_closers
            return _narrowed(allowed, closers), True
        if self.closing_reserve and state.list_full(remaining, self.closing_reserve):
            return _narrowed(allowed, tokens.structure_closers), False  # "]" rather than a call cut by the budget
        if depth is None:
            return allowed, False
        named = set(state.names)
        plan_open = any(name not in named for name in request.planned_call_tools)
        calls = state.calls_so_far() if request.enumerations or (self.end_with_plan and not plan_open) else None
        if plan_open or (calls is not None and enumeration_unfinished(calls, request.enumerations)):
            return _narrowed(allowed, ~tokens.enders[depth]), False  # a planned tool or an item is still to call
        if (self.end_with_plan and len(request.planned_call_tools) >= 2 and calls is not None
                and not enumeration_open(calls, request.enumerations)):
            return _narrowed(allowed, ~tokens.continuers[depth]), False  # the plan is complete: no further call
        return allowed, False


def _narrowed(allowed: torch.Tensor, preferred: torch.Tensor) -> torch.Tensor:
    """`allowed & preferred`, or `allowed` when that leaves nothing (the grammar's choice always wins)."""
    narrowed = allowed & preferred.to(allowed.device)
    return narrowed if narrowed.any() else allowed


def _allowed_tokens(matchers: list[llguidance.LLMatcher], vocab_size: int) -> torch.Tensor:
    """(A, vocab) bool mask, on the CPU, of the tokens each matcher allows next (the rows filled in parallel)."""
    bitmask = llguidance.torch.allocate_token_bitmask(len(matchers), vocab_size)
    llguidance.torch.fill_next_token_bitmask_par(_EXECUTOR, [(matcher, row) for row, matcher in enumerate(matchers)],
                                                 bitmask)
    bits = (bitmask.unsqueeze(-1) >> _BIT_SHIFTS) & 1  # (A, words, 32), little-endian bit order
    return bits.view(len(matchers), -1)[:, :vocab_size].bool()


def _consume(matcher: llguidance.LLMatcher, tokens: list[int]) -> None:
    if tokens and not matcher.consume_tokens(tokens):
        raise RuntimeError(f"grammar rejected tokens {tokens[:20]}: {matcher.get_error():.500}")


def _logits(model: ToolRouterModel, hidden: torch.Tensor, allowed: torch.Tensor, full: bool) -> torch.Tensor:
    """(A, vocab) float logits of the last hidden states (A, d); where few tokens are allowed (`allowed`, on the
    CPU; and not `full`), only theirs are computed and the others are -inf."""
    weight = model.lm_head.weight
    candidates = allowed.any(dim=0).nonzero().flatten()
    if full or len(candidates) * _SPARSE_HEAD_SHARE > weight.shape[0] or model.lm_head.bias is not None:
        return model.lm_head(hidden).float()
    candidates = candidates.to(hidden.device)
    logits = torch.full((hidden.shape[0], weight.shape[0]), float("-inf"), device=hidden.device)
    logits[:, candidates] = (hidden @ weight[candidates].T).float()
    return logits


@torch.no_grad()
def constrained_greedy_decode(
    model: ToolRouterModel,
    requests: list[DecodeRequest],
    rules: DecodingRules,
    *,
    memory_template: torch.Tensor,
    eos_token_id: int,
    pad_token_id: int = 0,
    logits_processor: LogitsProcessor | None = None,
) -> list[DecodeOutput]:
    """Decode all requests together; returns one `DecodeOutput` per request, in order.

    `memory_template` is any (L, 2, kvh, ·, hd) tensor on the model's device (layout for empty tool sets).
    `logits_processor` may adjust the (A, vocab) float logits before masking (e.g. a logit bias).
    At the first free token a request's `call_bias` is added to the call-opening logits (below 0, fewer calls)
    and its `call_margin` measured; after that, `rules` steer each call list.
    """
    device = memory_template.device
    vocab_size = model.lm_head.out_features
    opening = rules.tokens.call_opening  # the masks and the rules stay on the CPU; the logits on the device
    texts = rules.tokens.texts
    outputs = [DecodeOutput() for _ in requests]
    states = [CallListState() for _ in requests]
    guards = [rules.new_loop_guard() for _ in requests]

    def take(b: int, tokens: list[int], forced: bool) -> None:
        """Append tokens to request b's output, feeding its state and loop guard."""
        outputs[b].token_ids += tokens
        outputs[b].forced_tokens += len(tokens) if forced else 0
        for token in tokens:
            states[b].feed(texts[token])
            if guards[b] is not None:
                guards[b].feed(token)

    pending: list[list[int]] = []
    for b, request in enumerate(requests):
        forced = request.matcher.compute_ff_tokens()
        _consume(request.matcher, forced)
        take(b, forced, forced=True)
        pending.append(list(request.prompt_ids) + forced)
    budget = [r.max_new_tokens for r in requests]
    active = list(range(len(requests)))
    next_position = [0] * len(requests)
    memory = GistMemory.batch([r.tool_memory for r in requests], memory_template)
    cache = model.new_cache()
    attention_mask = torch.zeros(len(requests), 0, dtype=torch.long, device=device)

    while active:
        lengths = [len(pending[b]) for b in active]
        width = max(lengths)
        input_ids = torch.full((len(active), width), pad_token_id, dtype=torch.long)
        new_mask = torch.zeros(len(active), width, dtype=torch.long)
        for row, b in enumerate(active):
            input_ids[row, : lengths[row]] = torch.tensor(pending[b])
            new_mask[row, : lengths[row]] = 1
        starts = torch.tensor([next_position[b] for b in active])
        positions = (starts[:, None] + torch.arange(width)[None, :]).to(device)
        attention_mask = torch.cat([attention_mask, new_mask.to(device)], dim=1)
        hidden = model.decode(input_ids.to(device), attention_mask, positions, memory, cache)
        last = hidden[torch.arange(len(active), device=device), torch.tensor(lengths, device=device) - 1]
        allowed = _allowed_tokens([requests[b].matcher for b in active], vocab_size)
        if not allowed.any(dim=1).all():
            raise RuntimeError("grammar dead end: no token allowed")
        deciding = [row for row, b in enumerate(active) if states[b].is_call is None]
        logits = _logits(model, last, allowed, full=logits_processor is not None or bool(deciding))
        if logits_processor is not None:
            logits = logits_processor(logits)
        for row in deciding:
            calls, answers = allowed[row] & opening, allowed[row] & ~opening
            if calls.any() and answers.any():
                b, row_logits = active[row], logits[row].cpu()
                outputs[b].call_margin = (row_logits[calls].max() - row_logits[answers].max()).item()
                logits[row, calls.to(device)] += requests[b].call_bias
        for row, b in enumerate(active):
            if states[b].is_call:
                allowed[row], closing = rules.steer(states[b], requests[b], allowed[row],
                                                    budget[b] - states[b].tokens, budget[b])
                outputs[b].closed_early |= closing
            vetoed = list(guards[b].vetoed()) if guards[b] is not None else []
            if vetoed:
                remaining = allowed[row].clone()
                remaining[vetoed] = False
                if remaining.any():  # the grammar's only choice is never vetoed
                    allowed[row] = remaining
        chosen = logits.masked_fill(~allowed.to(device), float("-inf")).argmax(dim=-1).tolist()

        keep: list[int] = []
        for row, b in enumerate(active):
            request, output, token = requests[b], outputs[b], chosen[row]
            next_position[b] += lengths[row]
            if states[b].is_call is None and token not in rules.tokens.call_opening_ids and request.max_text_tokens is not None:
                budget[b] = min(budget[b], request.max_text_tokens)
                if budget[b] == 0:  # decide only: a text answer without its text
                    output.stopped = True
                    continue
            _consume(request.matcher, [token])
            if request.matcher.is_stopped():  # EOS after a text answer, or a completed call list
                if token != eos_token_id:
                    take(b, [token], forced=False)
                output.stopped = True
                continue
            take(b, [token], forced=False)
            forced = request.matcher.compute_ff_tokens()
            _consume(request.matcher, forced)
            take(b, forced, forced=True)
            pending[b] = [token] + forced
            if request.matcher.is_stopped() or (request.text_sink is not None and states[b].is_call is False
                                                and not request.text_sink(pending[b])):
                output.stopped = True
            elif len(output.token_ids) < budget[b]:
                keep.append(row)
        if len(keep) < len(active):
            rows = torch.tensor(keep, dtype=torch.long, device=device)
            if keep:
                cache.batch_select_indices(rows)
                attention_mask = attention_mask[rows]
                memory = memory.select(rows)
            active = [active[row] for row in keep]
    return outputs
