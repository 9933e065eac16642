"""Selection: which tool each call of a request names, before decoding.

The selection score of a tool is the `ToolSelector`'s logit (a dual encoder over the request's encoder states
and the tool's gists) plus `lexical_weight` x the BM25 word match (`LexicalMatcher`) of the last user message.
In "selector" mode the first call names the best-scored tool, and `clause_plan_gap` plans the later calls from
the request's clauses; the grammar and `tool_choice` still decide what is allowed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .config import RouterConfig
from .lexical import LexicalMatcher
from .messages import executed_calls, selection_text
from .modeling import ToolRouterModel, pad_right
from .schema import Tool

_CLAUSE_BREAK = re.compile(r"(?<=[.?!])\s+|;\s*|,?\s+(?:and\s+)?then\s+|,?\s*\balso\b,?\s*", re.IGNORECASE)


def split_clauses(text: str) -> list[str]:
    """The clauses of a request: its sentences, also cut at ";" and at "then" / "also" connectives — each
    possibly asking for a call of its own (`RouterConfig.clause_plan_gap`)."""
    return [clause.strip() for clause in _CLAUSE_BREAK.split(text) if clause and clause.strip(" ,.?!")]


@dataclass
class Selection:
    """What selection decided for one request (empty where it took no part)."""

    first: str | None = None
    """The tool the first call names."""
    planned: tuple[str, ...] = ()
    """The tools the request's clauses ask for, in order: each later call names the first not named yet."""


class ToolSelection:
    """The selection stage: scores tools for requests, in one encoder pass per batch."""

    def __init__(self, model: ToolRouterModel, tokenizer: PreTrainedTokenizerBase, config: RouterConfig,
                 lexical: LexicalMatcher):
        self.model, self.tokenizer, self.config, self.lexical = model, tokenizer, config, lexical

    def query_token_ids(self, text: str) -> list[int]:
        """Token ids of a text the `ToolSelector` reads: its first `max_schema_tokens` tokens (EOS if empty)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[: self.config.max_schema_tokens] or [self.tokenizer.eos_token_id]

    def scores(self, conversations: Sequence[list[dict[str, Any]]], tool_lists: Sequence[Sequence[Tool]],
               gist_sets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The selection score (T,) of each conversation's tools, from their gists (T, K, d)."""
        if not conversations:
            return []
        texts = [selection_text(messages) for messages in conversations]
        device = self.model.lm_head.weight.device
        input_ids, mask = pad_right([self.query_token_ids(text) for text in texts], device=device)
        selector = self.model.selector
        queries = selector.query_vectors(self.model.encoder_states(input_ids, mask), mask)
        scores = [selector.scores(q[None], selector.tool_vectors(gists)[None])[0].float()
                  for q, gists in zip(queries, gist_sets)]
        if self.config.lexical_weight:
            scores = [s + self.config.lexical_weight * self.lexical.scores(text, tools).to(s.device)
                      for s, text, tools in zip(scores, texts, tool_lists)]
        return scores

    def select(self, conversations: Sequence[list[dict[str, Any]]], tool_lists: Sequence[Sequence[Tool]],
               gist_sets: Sequence[torch.Tensor], plan: Sequence[bool]) -> list[Selection]:
        """Per request, the first call's tool (the best selection score) and, where `plan` (parallel calls
        allowed), the tools its clauses plan. In a turn whose calls already ran (`executed_calls`), the plan is
        what is left of it, and the first call names its first tool (none is forced when nothing is left)."""
        scores = self.scores(conversations, tool_lists, gist_sets)
        plans = self.clause_plans(conversations, tool_lists, gist_sets, plan)
        selections = []
        for messages, tools, row, planned in zip(conversations, tool_lists, scores, plans):
            executed = Counter(call["name"] for call in executed_calls(messages))
            if not executed:
                selections.append(Selection(tools[int(row.argsort(descending=True, stable=True)[0])].name, planned))
                continue
            remaining = []  # the plan less the calls that ran; after results, no other call is forced
            for name in planned:
                if executed[name]:
                    executed[name] -= 1
                else:
                    remaining.append(name)
            selections.append(Selection(remaining[0] if remaining else None, tuple(remaining)))
        return selections

    def clause_plans(self, conversations: Sequence[list[dict[str, Any]]], tool_lists: Sequence[Sequence[Tool]],
                     gist_sets: Sequence[torch.Tensor], plan: Sequence[bool]) -> list[tuple[str, ...]]:
        """Per request, the tools its clauses ask for, in order and each once: a clause's best-scored tool where
        that score leads the clause's second best by at least `clause_plan_gap` (empty with no gap set, one
        clause, fewer than two tools, or `plan` False)."""
        gap = self.config.clause_plan_gap
        clauses = [split_clauses(selection_text(messages)) if gap is not None and wanted and len(tools) > 1 else []
                   for messages, tools, wanted in zip(conversations, tool_lists, plan)]
        pairs = [(i, clause) for i, found in enumerate(clauses) if len(found) > 1 for clause in found]
        if not pairs:
            return [()] * len(conversations)
        owners = [i for i, _ in pairs]
        scores = self.scores([[{"role": "user", "content": clause}] for _, clause in pairs],
                             [tool_lists[i] for i in owners], [gist_sets[i] for i in owners])
        plans: list[list[str]] = [[] for _ in conversations]
        for i, clause_scores in zip(owners, scores):
            best = clause_scores.topk(2)
            name = tool_lists[i][int(best.indices[0])].name
            if best.values[0] - best.values[1] >= gap and name not in plans[i]:
                plans[i].append(name)
        return [tuple(planned) for planned in plans]
