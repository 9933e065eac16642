"""Greedy, grammar-constrained, batched decoding with a KV cache and jump-forward.

Each step feeds every unfinished request its pending tokens (the token just chosen plus whatever the
grammar forces after it), right-padded to the longest; padding is masked out of the attention for good,
so requests advance by different numbers of tokens in one forward pass. Finished requests leave the
batch (their rows are dropped from the cache and the gist memory).

Greedy decoding of a small model can fall into a loop inside a free value ("1000000…", the same list item
again and again) until the budget ends. Two guards keep calls finishing: `LoopGuard` vetoes the token that
would carry a repetition on (the grammar's choice always wins over the veto), and in the last
`closing_reserve` tokens of a call's budget the decoder prefers any allowed token that only closes
strings, lists and objects, so the call completes and validates instead of being cut.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llguidance
import llguidance.torch
import torch

from .enumerations import Enumeration, enumeration_open, enumeration_unfinished, parse_call_list_prefix
from .modeling import GistMemory, ToolRouterModel

if TYPE_CHECKING:
    from .copying import SourceCopy

LogitsProcessor = Callable[[torch.Tensor], torch.Tensor]
_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


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
    later_call_tools: frozenset[str] | None = None
    """The tools later calls of the list may name, where the grammar allows one of them; None: free."""
    planned_call_tools: tuple[str, ...] = ()
    """Tools the request's clauses ask for: each later call names the first of them not named yet, before
    `later_call_tools` apply."""
    enumerations: tuple[Enumeration, ...] = ()
    """The request's enumerations ("Paris and Rome"): while the calls take some items of one and not others,
    the list does not end (`enumeration_unfinished`)."""
    decline_call: bool = False
    """Where the first token may open a call or answer, answer (the selector found no tool relevant); the call
    margin is still measured."""
    call_bias: float = 0.0
    """Added to the call-opening logits at the first token: below 0, fewer calls."""
    copy_source: str = ""
    """The conversation's text, whose spans argument values may copy (`SourceCopy`)."""


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


@dataclass
class JsonState:
    """Bracket depth and string state of partial JSON text, fed one character at a time."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False

    def feed(self, char: str) -> int:
        """Take one character; +1 when it opens an array or object, -1 when it closes one, 0 otherwise."""
        if self.in_string:
            self.escaped, self.in_string = (False, True) if self.escaped else (char == "\\", char != '"')
        elif char == '"':
            self.in_string = True
        elif char in "[{":
            self.depth += 1
            return 1
        elif char in "]}":
            self.depth -= 1
            return -1
        return 0


def scan_call_list(token_texts: list[str], token_ids: list[int]) -> tuple[bool, int, int]:
    """(inside a string, bracket depth, tokens of the longest call so far — the open one too once its arguments
    have closed — or 0 while a call's arguments are open) at the end of a call list's `token_ids`."""
    state, opened_at, longest, arguments_closed = JsonState(), 0, 0, False
    for position, token in enumerate(token_ids):
        for char in token_texts[token]:
            change = state.feed(char)
            if change > 0 and state.depth == 2:
                opened_at, arguments_closed = position, False
            elif change < 0:
                arguments_closed = arguments_closed or state.depth == 2
                if state.depth == 1:
                    longest = max(longest, position + 1 - opened_at)
    if state.depth == 2 and arguments_closed:
        longest = max(longest, len(token_ids) - opened_at)
    return state.in_string, state.depth, longest if state.depth == 1 or arguments_closed else 0


class CallCloser:
    """Keeps call lists inside their budget: near the end (`engaged`) it prefers tokens that only close — a quote
    ending the open string, or `]`/`}` outside strings — and between calls it closes the list when the rest of
    the budget would not hold another call as long as the longest so far plus the reserve (`list_full`).
    Built once per tokenizer from each token's text."""

    def __init__(self, token_texts: list[str], reserve: int):
        self.token_texts, self.reserve = token_texts, reserve
        self.string_closers = torch.tensor([t[:1] == '"' and not t.strip('"]}') for t in token_texts])
        self.structure_closers = torch.tensor([bool(t) and not t.strip("]}") for t in token_texts])

    def engaged(self, remaining: int, budget: int) -> bool:
        """True within the reserve (at most a quarter of the budget) of the end."""
        return remaining <= min(self.reserve, budget // 4)

    def list_full(self, token_ids: list[int], remaining: int) -> bool:
        """True where a call list can end (between calls, or a call's arguments just closed) when `remaining`
        tokens cannot hold another call as long as the longest so far plus the reserve: the list should close
        rather than open a call it cannot finish."""
        inside_string, depth, longest = scan_call_list(self.token_texts, token_ids)
        return not inside_string and depth in (1, 2) and longest > 0 and remaining < longest + self.reserve

    def preferred(self, token_ids: list[int]) -> torch.Tensor:
        """(vocab,) bool mask of the closing tokens that fit after `token_ids`."""
        return self.string_closers if scan_call_list(self.token_texts, token_ids)[0] else self.structure_closers


def _goes_on_with_list(text: str, depth: int) -> bool:
    """True when `text`, read at bracket `depth` of a call list (1: between calls, 2: in a call whose arguments
    closed, 3: in its arguments), closes the call and reaches the "," that goes on with the list."""
    head, comma, _ = text.partition(",")
    return bool(comma) and "".join(head.split()) == "}" * (depth - 1)


def _ends_list(text: str, depth: int) -> bool:
    """True when `text`, read at bracket `depth` of a call list (as above), closes the call and the list."""
    return "".join(text.split()).startswith("}" * (depth - 1) + "]")


class ListContinuation:
    """Where a call list may go on or end, the tokens that go on with it — a `,` between calls, possibly after the
    braces that close the call (`}},` from inside its arguments, `},` once they closed, `,` after the call) —
    and those that end it (the same braces, then `]`). Built once per tokenizer from each token's text."""

    def __init__(self, token_texts: list[str]):
        self.token_texts = token_texts
        self.continuers = {depth: torch.tensor([_goes_on_with_list(t, depth) for t in token_texts])
                           for depth in (1, 2, 3)}
        self.enders = {depth: torch.tensor([_ends_list(t, depth) for t in token_texts]) for depth in (1, 2, 3)}

    def list_step(self, token_ids: list[int]) -> int | None:
        """The bracket depth (1-3) where the list may go on or end after `token_ids` (the grammar decides which
        tokens are allowed); None inside a string, a call's name or a nested value, and before the first call."""
        inside_string, depth, longest = scan_call_list(self.token_texts, token_ids)
        at_list_step = depth == 3 or (depth in (1, 2) and longest > 0)
        return depth if at_list_step and not inside_string else None

    def plan_unfinished(self, token_ids: list[int], planned_call_tools: Sequence[str]) -> bool:
        """True while a tool of `planned_call_tools` has no call in the list so far."""
        if not planned_call_tools:
            return False
        named = set(list_call_names("".join(self.token_texts[i] for i in token_ids)))
        return any(name not in named for name in planned_call_tools)

    def plan_done(self, token_ids: list[int], depth: int, planned_call_tools: Sequence[str],
                  enumerations: Sequence[Enumeration]) -> bool:
        """True when `planned_call_tools` hold two or more tools, each has a call in the list so far (cut at this
        step of bracket `depth`), and no enumeration has an item a call takes and one no call takes
        (`enumeration_open`): the list holds what the request's clauses asked for."""
        if len(planned_call_tools) < 2 or self.plan_unfinished(token_ids, planned_call_tools):
            return False
        calls = parse_call_list_prefix("".join(self.token_texts[i] for i in token_ids), depth)
        return calls is not None and not enumeration_open(calls, enumerations)

    def items_unfinished(self, token_ids: list[int], depth: int, enumerations: Sequence[Enumeration]) -> bool:
        """True while the calls so far (the list cut at this step of bracket `depth`) take some items of one of
        `enumerations` and not others, the last call taking a new one (`enumeration_unfinished`)."""
        if not enumerations:
            return False
        calls = parse_call_list_prefix("".join(self.token_texts[i] for i in token_ids), depth)
        return calls is not None and enumeration_unfinished(calls, enumerations)


_CALL_NAME = re.compile(r'\{\s*"name"\s*:\s*"([^"\\]*)')


def _call_starts(text: str) -> tuple[list[int], JsonState]:
    """(offsets of the call objects directly in a call list's `text`, the JSON state at its end)."""
    state, starts = JsonState(), []
    for index, char in enumerate(text):
        if state.feed(char) > 0 and state.depth == 2 and char == "{":
            starts.append(index)
    return starts, state


def list_call_names(text: str) -> list[str]:
    """The complete names of the calls in a call list's `text` so far, in order."""
    starts, _ = _call_starts(text)
    names = [_CALL_NAME.match(text, start) for start in starts]
    return [name.group(1) for name in names if name is not None and text[name.end():name.end() + 1] == '"']


def call_name_prefix(text: str) -> tuple[list[str], str] | None:
    """(names of the earlier calls, this call's name so far) when a call list's `text` ends inside a call's
    `"name"` string (a call object directly in the list, not a `"name"` key among its arguments); None otherwise."""
    starts, state = _call_starts(text)
    match = _CALL_NAME.fullmatch(text, starts[-1]) if state.in_string and state.depth == 2 and starts else None
    if match is None:
        return None
    return list_call_names(text[:starts[-1]]), match.group(1)


class CallNameSteering:
    """Inside a call's `"name": "` string, keeps only the allowed tokens that continue a name the request
    allows there (or close it): the first call its `first_call_tool`; a later call the first of the
    `planned_call_tools` no call has named yet, or, with none left, its `later_call_tools`.
    Built once per tokenizer from each token's text."""

    def __init__(self, token_texts: list[str]):
        self.token_texts = token_texts

    def restrict(self, token_ids: list[int], first_call_tool: str | None, later_call_tools: frozenset[str] | None,
                 allowed: torch.Tensor, planned_call_tools: Sequence[str] = ()) -> torch.Tensor | None:
        """(vocab,) bool subset of `allowed` that spells on one of the names; None outside a call's name, when
        that call is free, when its name so far leaves the names behind, or when the grammar allows none."""
        position = call_name_prefix("".join(self.token_texts[i] for i in token_ids))
        if position is None:
            return None
        earlier, prefix = position
        if not earlier:
            names = (first_call_tool,) if first_call_tool is not None else ()
        else:
            unnamed = [name for name in planned_call_tools if name not in earlier]
            names = unnamed[:1] or later_call_tools or ()
        rests = [target[len(prefix):] for target in (f'{name}"' for name in names) if target.startswith(prefix)]
        if not rests:
            return None
        keep = torch.zeros_like(allowed)
        for token in allowed.nonzero().flatten().tolist():
            text = self.token_texts[token]
            if text and any(rest.startswith(text) or text.startswith(rest) for rest in rests):
                keep[token] = True
        return keep if keep.any() else None


@dataclass(frozen=True)
class LoopGuard:
    """Vetoes the next token when it would extend a repetition at the end of the output.

    A repetition of period p is the output's tail equal to itself shifted by p tokens. The token that
    continues it is vetoed once the repeated tail would cover more than two periods (a third copy of a
    list item or phrase) and at least `min_span` tokens (so "1000", "00:00:00" or a value given twice stay
    possible).
    """

    min_span: int = 12
    max_period: int = 48

    def vetoed(self, history: list[int]) -> set[int]:
        """Token ids that would continue a repetition at the end of `history`."""
        n, vetoed = len(history), set()
        for period in range(1, min(self.max_period, n // 2) + 1):
            run = 0  # trailing positions i with history[i] == history[i - period]
            while run < n - period and history[n - 1 - run] == history[n - 1 - run - period]:
                run += 1
            if run + 1 + period >= max(2 * period + 1, self.min_span):
                vetoed.add(history[n - period])
        return vetoed


def _allowed_tokens(matchers: list[llguidance.LLMatcher], vocab_size: int) -> torch.Tensor:
    """(A, vocab) bool mask of the tokens each matcher allows next."""
    bitmask = llguidance.torch.allocate_token_bitmask(len(matchers), vocab_size)
    for row, matcher in enumerate(matchers):
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, row)
    bits = (bitmask.unsqueeze(-1) >> _BIT_SHIFTS) & 1  # (A, words, 32), little-endian bit order
    return bits.view(len(matchers), -1)[:, :vocab_size].bool()


def _consume(matcher: llguidance.LLMatcher, tokens: list[int]) -> None:
    if tokens and not matcher.consume_tokens(tokens):
        raise RuntimeError(f"grammar rejected tokens {tokens}: {matcher.get_error()}")


@torch.no_grad()
def constrained_greedy_decode(
    model: ToolRouterModel,
    requests: list[DecodeRequest],
    *,
    memory_template: torch.Tensor,
    eos_token_id: int,
    call_opening_tokens: frozenset[int] = frozenset(),
    pad_token_id: int = 0,
    logits_processor: LogitsProcessor | None = None,
    loop_guard: LoopGuard | None = None,
    closer: CallCloser | None = None,
    steering: CallNameSteering | None = None,
    continuation: ListContinuation | None = None,
    list_bias: float = 0.0,
    end_with_plan: bool = False,
    copier: SourceCopy | None = None,
    copy_bias: float = 0.0,
) -> list[DecodeOutput]:
    """Decode all requests together; returns one `DecodeOutput` per request, in order.

    `memory_template` is any (L, 2, kvh, ·, hd) tensor on the model's device (layout for empty tool sets).
    `call_opening_tokens`: ids whose text starts with "[": an output starting otherwise is a text answer.
    `logits_processor` may adjust the (A, vocab) float logits before masking (e.g. a logit bias).
    `loop_guard` vetoes tokens that carry a repetition on; `closer` steers calls near their budget's end;
    `steering` keeps each call's name to the request's `first_call_tool` / `planned_call_tools` /
    `later_call_tools`.
    A request's `call_bias` is added to the call-opening logits at the first token: below 0, fewer calls; its
    `decline_call` forbids them there instead. `list_bias` is added, wherever a call list may go on or end, to the
    tokens `continuation` finds going on with it: above 0, longer lists. While a request's `planned_call_tools`
    are not all called, or its `enumerations` are half covered, its list does not end (unless the budget's
    closing rules need it to); with `end_with_plan`, once two or more are all called and none is half covered
    (`ListContinuation.plan_done`), it ends. Inside an argument value, `copy_bias` is added to the tokens
    `copier` finds copying a span of the request's `copy_source` on.
    """
    device = memory_template.device
    vocab_size = model.lm_head.out_features
    opening = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    opening[list(call_opening_tokens)] = True
    outputs = [DecodeOutput() for _ in requests]
    pending: list[list[int]] = []
    for request, output in zip(requests, outputs):
        forced = request.matcher.compute_ff_tokens()
        _consume(request.matcher, forced)
        output.token_ids += forced
        output.forced_tokens += len(forced)
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
        logits = model.lm_head(last).float()
        if logits_processor is not None:
            logits = logits_processor(logits)
        allowed = _allowed_tokens([requests[b].matcher for b in active], vocab_size).to(device)
        if not allowed.any(dim=1).all():
            raise RuntimeError("grammar dead end: no token allowed")
        for row, b in enumerate(active):
            output = outputs[b]
            if not output.token_ids:
                calls, texts = allowed[row] & opening, allowed[row] & ~opening
                if calls.any() and texts.any():
                    output.call_margin = (logits[row][calls].max() - logits[row][texts].max()).item()
                    if requests[b].decline_call:
                        allowed[row] &= ~opening
                    else:
                        logits[row, calls] += requests[b].call_bias
            is_call = bool(output.token_ids) and output.token_ids[0] in call_opening_tokens
            request = requests[b]
            if steering is not None and is_call and (request.first_call_tool or request.later_call_tools
                                                     or request.planned_call_tools):
                spelled = steering.restrict(output.token_ids, request.first_call_tool, request.later_call_tools,
                                            allowed[row], request.planned_call_tools)
                if spelled is not None:
                    allowed[row] = spelled
            depth = (continuation.list_step(output.token_ids)
                     if continuation is not None and is_call
                     and (list_bias or request.planned_call_tools or request.enumerations) else None)
            if depth is not None and list_bias:
                logits[row, continuation.continuers[depth].to(device)] += list_bias
            if copier is not None and copy_bias and is_call and request.copy_source:
                copier.bias(logits[row], output.token_ids, request.copy_source, copy_bias)
            left = budget[b] - len(output.token_ids)
            if closer is not None and is_call and closer.engaged(left, budget[b]):
                output.closed_early = True
                closing = allowed[row] & closer.preferred(output.token_ids).to(device)
                if closing.any():
                    allowed[row] = closing
            elif closer is not None and is_call and closer.list_full(output.token_ids, left):
                closing = allowed[row] & closer.structure_closers.to(device)
                if closing.any():  # "]" rather than "," and a call cut by the budget
                    allowed[row] = closing
            elif depth is not None and (continuation.plan_unfinished(output.token_ids, request.planned_call_tools)
                                        or continuation.items_unfinished(output.token_ids, depth,
                                                                         request.enumerations)):
                going_on = allowed[row] & ~continuation.enders[depth].to(device)
                if going_on.any():  # a planned tool or an enumerated item is still to be called: no end here
                    allowed[row] = going_on
            elif depth is not None and end_with_plan and continuation.plan_done(
                    output.token_ids, depth, request.planned_call_tools, request.enumerations):
                ending = allowed[row] & ~continuation.continuers[depth].to(device)
                if ending.any():  # the plan is complete: no further call
                    allowed[row] = ending
            if loop_guard is not None:
                vetoed = list(loop_guard.vetoed(output.token_ids))
                if vetoed:
                    remaining = allowed[row].clone()
                    remaining[vetoed] = False
                    if remaining.any():  # the grammar's only choice is never vetoed
                        allowed[row] = remaining
        chosen = logits.masked_fill(~allowed, float("-inf")).argmax(dim=-1).tolist()

        keep: list[int] = []
        for row, b in enumerate(active):
            request, output, token = requests[b], outputs[b], chosen[row]
            next_position[b] += lengths[row]
            if not output.token_ids and token not in call_opening_tokens and request.max_text_tokens is not None:
                budget[b] = min(budget[b], request.max_text_tokens)
                if budget[b] == 0:  # decide only: a text answer without its text
                    output.stopped = True
                    continue
            _consume(request.matcher, [token])
            if request.matcher.is_stopped():  # EOS after a text answer, or a completed call list
                if token != eos_token_id:
                    output.token_ids.append(token)
                output.stopped = True
                continue
            output.token_ids.append(token)
            forced = request.matcher.compute_ff_tokens()
            _consume(request.matcher, forced)
            output.token_ids += forced
            output.forced_tokens += len(forced)
            pending[b] = [token] + forced
            if request.matcher.is_stopped():
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
