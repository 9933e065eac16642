"""The curriculum on HF Accelerate: schema auto-encoding, contrastive gist discrimination, end-to-end tool
calling (design.md) and tool selection, with checkpoint/resume, JSONL logs and progress bars.

    stage "autoencode"  : reconstruct a tool's schema text from its gists alone
    stage "contrastive" : InfoNCE between the mean-pooled query and mean-pooled gists (right tool vs hard
                          negatives, temperature 0.07) + ae_weight x AE
    stage "calling"     : the router's output text (calls, or the "no call" decision) for examples with
                          distractor tools + contrastive_weight x InfoNCE + ae_weight x AE on ae_fraction of batches
    stage "selection"   : the `ToolSelector` picks the gold tool among each example's tools (gists fixed)

The same script runs on the CPU, one GPU or several (`accelerate launch -m toolformer_router.cli train ...`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from toolformer_router import Tool, ToolRouter, ToolRouterError
from toolformer_router.checkpoint import save_checkpoint
from toolformer_router.call_state import JsonState
from toolformer_router.modeling import GistMemory, pad_right
from toolformer_router.router import normalize_messages, selection_text

from .agent_turns import agent_turns
from .config import StageConfig, TrainConfig
from .data import compose_multi_call
from .everyday import mask_names

IGNORE_INDEX = -100
AE_INSTRUCTION = "Write out the JSON schema of the available tool."


@dataclass
class PreparedExample:
    """One training example in token form."""

    tools: list[Tool]
    prompt_ids: list[int]
    target_ids: list[int]
    """Answer tokens + EOS for a call; empty for "no call" (trained as a decision, see `calling_loss`)."""
    gold_tool_indexes: list[int]
    query_text: str
    list_steps: list[int]
    """Indexes in `target_ids` where the call list goes on or ends (see `list_step_positions`)."""


def list_step_positions(token_texts: Sequence[str]) -> list[int]:
    """Indexes of the tokens that decide, after each call object closes, whether the list goes on (`,`) or
    ends (`]`): the token holding that character, which may also hold the call's closing brace."""
    state, positions, call_closed = JsonState(), [], False
    for position, text in enumerate(token_texts):
        for char in text:
            change = state.feed(char)
            if change < 0 and state.depth == 1:
                call_closed = True
            elif call_closed and (char == "," or (change < 0 and state.depth == 0)):
                positions.append(position)
                call_closed = False
    return positions


class EncoderStateBank:
    """Encoder outputs (S, d) per tool schema and per query text.

    With a frozen encoder (`frozen=True`) they are computed once, under no_grad, and kept (the CPU-feasible
    mode); otherwise they are recomputed with autograd on every use.
    """

    def __init__(self, router: ToolRouter, *, frozen: bool, storage_dtype: torch.dtype = torch.float16):
        self.router, self.frozen, self.storage_dtype = router, frozen, storage_dtype
        self._ids: dict[str, list[int]] = {}
        self._states: dict[str, torch.Tensor] = {}

    def tool_key(self, tool: Tool) -> str:
        if tool.schema_hash not in self._ids:
            text = self.router.tool_text(tool)
            self._ids[tool.schema_hash] = self.router.tokenizer(text, add_special_tokens=False)["input_ids"]
        return tool.schema_hash

    def text_key(self, text: str) -> str:
        key = "text:" + hashlib.sha256(text.encode()).hexdigest()
        if key not in self._ids:
            self._ids[key] = self.router.selection.query_token_ids(text)
        return key

    def token_ids(self, key: str) -> list[int]:
        return self._ids[key]

    def precompute(self, keys: Sequence[str], batch_size: int = 32, desc: str = "encoder states") -> None:
        """Fill the frozen bank for these keys (no-op for a trainable encoder)."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._states]
        if not self.frozen or not missing:
            return
        missing.sort(key=lambda k: len(self._ids[k]))
        model = self.router.model
        with torch.no_grad(), tqdm(total=len(missing), desc=desc, unit="seq") as progress:
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                ids, mask = pad_right([self._ids[k] for k in chunk], device=self.router.device)
                states = model.encoder_states(ids, mask)
                for row, key in enumerate(chunk):
                    self._states[key] = states[row, : len(self._ids[key])].to(dtype=self.storage_dtype)
                progress.update(len(chunk))

    def batch(self, keys: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, S, d) encoder states, right-padded, and their (n, S) mask, on the model's device."""
        device = self.router.device
        dtype = self.router.model.lm_head.weight.dtype
        if not self.frozen:
            ids, mask = pad_right([self._ids[k] for k in keys], device=device)
            return self.router.model.encoder_states(ids, mask), mask
        self.precompute(keys)
        longest = max(len(self._ids[k]) for k in keys)
        hidden = torch.zeros(len(keys), longest, self._states[keys[0]].shape[-1], dtype=dtype, device=device)
        mask = torch.zeros(len(keys), longest, dtype=torch.long, device=device)
        for row, key in enumerate(keys):
            states = self._states[key]
            hidden[row, : len(states)] = states.to(device, dtype)
            mask[row, : len(states)] = 1
        return hidden, mask


class CurriculumModel(nn.Module):
    """Wraps the router model so that each stage's loss is one `forward` (what DDP needs)."""

    def __init__(self, router: ToolRouter, bank: EncoderStateBank, *, no_grad_layers: int, max_seq_len: int):
        super().__init__()
        self.model = router.model
        self.router = router
        self.bank = bank
        self.no_grad_layers = no_grad_layers
        self.max_seq_len = max_seq_len
        self.eos = router.tokenizer.eos_token_id
        self.ae_prompt = router.prompt_ids([{"role": "user", "content": AE_INSTRUCTION}])
        self.call_openers = torch.tensor(sorted(router._call_opening_tokens), dtype=torch.long)
        self._gist_store: tuple[str | None, dict[str, torch.Tensor]] = (None, {})

    # -------------------------------------------------------------------------------------- pieces
    def gists(self, tools: Sequence[Tool]) -> torch.Tensor:
        """(n, K, d) gists with autograd through the pooling (and the encoder unless frozen)."""
        hidden, mask = self.bank.batch([self.bank.tool_key(t) for t in tools])
        return self.model.gist_pooling(hidden, mask)

    def _decode(self, sequences: list[tuple[list[int], list[int]]], memories: list[torch.Tensor]):
        """Decode (prompt, answer) rows, each with its own memory -> (hidden (n, L, d), labels (n, L), tokens).

        Rows keep their last `max_seq_len` tokens; labels are IGNORE_INDEX outside the answers."""
        device = self.router.device
        rows = [(p + a)[-self.max_seq_len :] for p, a in sequences]
        ids, mask = pad_right(rows, device=device)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, (_, answer) in enumerate(sequences):
            length = len(rows[row])
            if answer:
                labels[row, length - len(answer) : length] = torch.tensor(answer[-length:], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        memory = GistMemory.batch(memories, self.router._memory_template())
        hidden = self.model.decode(ids, mask, positions, memory, no_grad_layers=self.no_grad_layers)
        return hidden, labels, int(mask.sum())

    def _token_loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the labelled positions."""
        shifted = labels[:, 1:]
        selected = shifted != IGNORE_INDEX
        logits = self.model.lm_head(hidden[:, :-1][selected]).float()
        return F.cross_entropy(logits, shifted[selected])

    def _decode_loss(self, sequences: list[tuple[list[int], list[int]]], memories: list[torch.Tensor]):
        """Cross-entropy on the answer part of (prompt, answer) sequences, each with its own memory."""
        hidden, labels, tokens = self._decode(sequences, memories)
        return self._token_loss(hidden, labels), tokens

    def ae_loss(self, tools: Sequence[Tool]) -> tuple[torch.Tensor, int]:
        """Stage 1: reconstruct each schema text from that tool's gists alone."""
        memories = self.model.project_memory(self.gists(tools))  # (n, L, 2, kvh, K, hd)
        sequences = [(self.ae_prompt, self.bank.token_ids(self.bank.tool_key(t)) + [self.eos]) for t in tools]
        return self._decode_loss(sequences, [GistMemory.flatten(m[None]) for m in memories])

    @torch.no_grad()
    def _fixed_gists(self, tools: Sequence[Tool]) -> torch.Tensor:
        """(n, K, d) gists without autograd, each computed once per version of the weights behind it."""
        fingerprint = self.model.memory_fingerprint()
        if self._gist_store[0] != fingerprint:
            self._gist_store = (fingerprint, {})
        store = self._gist_store[1]
        missing = list({t.schema_hash: t for t in tools if t.schema_hash not in store}.values())
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            store.update(zip([t.schema_hash for t in chunk], self.gists(chunk)))
        return torch.stack([store[t.schema_hash] for t in tools])

    def contrastive_loss(self, examples: Sequence[PreparedExample], negatives: Sequence[Sequence[Tool]],
                         temperature: float) -> torch.Tensor:
        """InfoNCE: mean-pooled query vs mean-pooled gists of [gold tool, *negatives]."""
        queries, query_mask = self.bank.batch([self.bank.text_key(e.query_text) for e in examples])
        query = (queries * query_mask[..., None]).sum(1) / query_mask.sum(1, keepdim=True)  # (B, d)
        candidates = [[e.tools[e.gold_tool_indexes[0]], *neg] for e, neg in zip(examples, negatives)]
        flat = [tool for group in candidates for tool in group]
        pooled = self.gists(flat).mean(dim=1).view(len(examples), -1, query.shape[-1])  # (B, 1+negatives, d)
        logits = torch.einsum("bd,bnd->bn", F.normalize(query.float(), dim=-1), F.normalize(pooled.float(), dim=-1))
        return F.cross_entropy(logits / temperature, torch.zeros(len(examples), dtype=torch.long, device=logits.device))

    def selection_loss(self, examples: Sequence[PreparedExample], candidates: str = "batch") -> torch.Tensor:
        """The `ToolSelector` picks the gold tool(s): cross-entropy of its logits, the gold tools' probabilities
        summed (a parallel call has several). Candidates: each example's own tools ("example"), or every tool
        of the batch ("batch": more negatives per query; other tools named like a gold one are left out).
        Gists stay fixed."""
        queries, mask = self.bank.batch([self.bank.text_key(e.query_text) for e in examples])
        selector = self.model.selector
        query_vectors = selector.query_vectors(queries, mask)  # (B, dim)
        if candidates == "batch":
            pool = list({t.schema_hash: t for e in examples for t in e.tools}.values())
            groups = [pool] * len(examples)
        else:
            groups = [list(e.tools) for e in examples]
        distinct = list({t.schema_hash: t for group in groups for t in group}.values())
        row = {t.schema_hash: i for i, t in enumerate(distinct)}
        tool_vectors = selector.tool_vectors(self._fixed_gists(distinct))  # (distinct tools, dim)
        losses = []
        for example, query, group in zip(examples, query_vectors, groups):
            gold = {example.tools[i].schema_hash for i in example.gold_tool_indexes}
            gold_names = {example.tools[i].name for i in example.gold_tool_indexes}
            group = [t for t in group if t.schema_hash in gold or t.name not in gold_names]
            logits = selector.scores(query[None], tool_vectors[[row[t.schema_hash] for t in group]][None])[0]
            positives = [i for i, t in enumerate(group) if t.schema_hash in gold]
            losses.append(-logits.log_softmax(-1)[positives].logsumexp(-1))
        return torch.stack(losses).mean()

    def calling_loss(self, examples: Sequence[PreparedExample], decision_weight: float = 0.0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Stage 2 -> (answer-token loss, decision loss, list-step loss, tokens), one decoder pass for the batch.

        Call examples train their answer tokens. Every example trains the call/no-call decision at its
        first answer position: p(call) = the probability mass on call-opening tokens, a binary
        cross-entropy with target 1 for calls and 0 for "no call" (no canned text is ever trained). With
        `decision_weight` 0 only "no call" examples contribute to it (the first token's cross-entropy
        already covers calls). The list-step loss is the mean cross-entropy at the tokens where a call list
        goes on or ends (`PreparedExample.list_steps`): one token per call, diluted in the answer-token loss."""
        counts = [len(e.tools) for e in examples]
        memories = self.model.project_memory(self.gists([t for e in examples for t in e.tools]))
        per_example = [GistMemory.flatten(chunk) for chunk in memories.split(counts)]
        hidden, labels, tokens = self._decode([(e.prompt_ids, e.target_ids) for e in examples], per_example)
        is_call = torch.tensor([bool(e.target_ids) for e in examples], device=hidden.device)
        zero = hidden.new_zeros(()).float()
        token_loss = self._token_loss(hidden, labels) * is_call.float().mean() if bool(is_call.any()) else zero
        lengths = [min(len(e.prompt_ids) + len(e.target_ids), self.max_seq_len) - len(e.target_ids)
                   for e in examples]
        decision_rows = torch.arange(len(examples), device=hidden.device)
        decision_hidden = hidden[decision_rows, torch.tensor(lengths, device=hidden.device) - 1]
        log_probs = self.model.lm_head(decision_hidden).float().log_softmax(-1)
        log_p_call = log_probs[:, self.call_openers.to(hidden.device)].logsumexp(-1).clamp(max=-1e-6)
        log_p_no_call = torch.log1p(-log_p_call.exp())
        if decision_weight:
            decision = -torch.where(is_call, log_p_call, log_p_no_call).mean()
        else:
            decision = -(log_p_no_call * (~is_call).float()).mean()
        step_rows, step_columns = [], []
        for row, (example, length) in enumerate(zip(examples, lengths)):
            for index in example.list_steps:
                if length + index - 1 >= 0:  # the position that predicts answer token `index`
                    step_rows.append(row)
                    step_columns.append(length + index - 1)
        if step_rows:
            step_logits = self.model.lm_head(hidden[step_rows, step_columns]).float()
            step_targets = labels[step_rows, [c + 1 for c in step_columns]]
            list_step = F.cross_entropy(step_logits, step_targets)
        else:
            list_step = zero
        return token_loss, decision, list_step, tokens

    def forward(self, stage: str, batch: dict[str, Any], config: StageConfig) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        tokens = 0
        if stage == "autoencode":
            parts["ae"], tokens = self.ae_loss(batch["tools"])
            total = parts["ae"]
        else:
            examples = batch["examples"]
            if stage == "calling":
                parts["calling"], parts["decision"], list_step, tokens = self.calling_loss(
                    examples, config.decision_weight)
                total = parts["calling"] + (config.decision_weight or 1.0) * parts["decision"]
                if config.list_step_weight:
                    parts["list_step"] = list_step
                    total = total + config.list_step_weight * list_step
            elif stage == "selection":
                parts[stage] = total = self.selection_loss(examples, config.selection_candidates)
            else:
                total = torch.zeros((), device=self.router.device)
            weight = 1.0 if stage == "contrastive" else config.contrastive_weight
            if weight and batch["contrastive"]:
                chosen = batch["contrastive"]
                parts["contrastive"] = self.contrastive_loss([examples[i] for i in chosen], batch["negatives"],
                                                             config.temperature)
                total = total + weight * parts["contrastive"]
            if config.ae_weight and batch.get("ae_tools"):
                parts["ae"], ae_tokens = self.ae_loss(batch["ae_tools"])
                total = total + config.ae_weight * parts["ae"]
                tokens += ae_tokens
        parts["loss"] = total
        parts["tokens"] = torch.tensor(float(tokens))
        return parts


class Curriculum:
    """Runs the configured stages with checkpoints every `checkpoint_every` steps and exact resume.

    Args:
        config: the training configuration.
        router: the router to train (its model is updated in place).
        train_examples: training-side examples in the unified format (`training.data.Example`).
    """

    def __init__(self, config: TrainConfig, router: ToolRouter, train_examples: Sequence[Any]):
        self.config = config
        self.router = router
        self.output_dir = Path(config.output_dir)
        cuda = torch.cuda.is_available()
        precision = config.mixed_precision if config.mixed_precision != "auto" else ("bf16" if cuda else "no")
        self.accelerator = Accelerator(
            mixed_precision=precision, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
        )
        router.model.to(self.accelerator.device)  # the encoder-state bank is computed and kept there
        self._set_trainable()
        if config.gradient_checkpointing and config.trainable != "new_modules":
            router.model.set_gradient_checkpointing(True)
        frozen_encoder = config.cache_encoder_outputs and config.trainable != "full"
        self.bank = EncoderStateBank(router, frozen=frozen_encoder)
        self._usable: dict[str, bool] = {}
        self.dropped: dict[str, int] = {}
        self.raw_examples = list(train_examples)
        self._composed_examples: dict[int, list[PreparedExample]] = {}
        self._agent_turn_examples: dict[int, list[PreparedExample]] = {}
        self._masked_examples: dict[int, list[PreparedExample]] = {}
        self.examples = [p for p in (self._prepare(e) for e in train_examples) if p is not None]
        if config.max_train_examples:
            self.examples = self.examples[: config.max_train_examples]
        self.catalog = list({t.schema_hash: t for e in self.examples for t in e.tools}.values())
        cross = router.model.cross_attention_layer_ids
        first_cross = router.model.decoder_layer_ids.index(cross[0]) if cross else 0
        self.module = CurriculumModel(
            router, self.bank, no_grad_layers=first_cross if config.trainable != "full" else 0,
            max_seq_len=config.max_seq_len,
        )
        self.module.train()
        self.log_path = self.output_dir / "log.jsonl"
        self._vectors: torch.Tensor | None = None  # catalog mean encoder states, for hard negatives
        self._catalog_index: dict[str, int] = {}

    # ------------------------------------------------------------------------------------ setup
    def _set_trainable(self) -> None:
        model = self.router.model
        if self.config.trainable == "lora":  # adapters above the encoder, so cached encoder states stay valid
            above_encoder = [f"decoder_layers.{i}.self_attn.{name}" for i, layer_id in enumerate(model.decoder_layer_ids)
                             if layer_id >= self.router.config.encoder_layers for name in self.config.lora.target_modules]
            model.add_lora(r=self.config.lora.r, alpha=self.config.lora.alpha, modules=above_encoder,
                           dropout=self.config.lora.dropout)
        self._select_trainable(None)

    def _select_trainable(self, only: Sequence[str] | None) -> None:
        """Set `requires_grad` from the config's `trainable`, narrowed to the new modules named in `only`."""
        model = self.router.model
        modules = {name: module for name, module in model.new_modules().items() if only is None or name in only}
        new = {id(p) for m in modules.values() for p in m.parameters()}
        everything = self.config.trainable == "full" and only is None
        for name, parameter in model.named_parameters():
            adapter = ".lora_" in name and only is None
            parameter.requires_grad_(everything or adapter or id(parameter) in new)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.router.model.named_parameters() if p.requires_grad]

    def _is_usable(self, raw: dict) -> bool:
        """A tool the router can take: valid, enforceable by the grammar, within max_schema_tokens."""
        key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
        if key not in self._usable:
            try:
                self.router.check_tools([raw])
                self._usable[key] = True
            except ToolRouterError:
                self._usable[key] = False
        return self._usable[key]

    def _prepare(self, example: Any) -> PreparedExample | None:
        """Token form of one example; unusable distractors are left out, an unusable gold tool drops it."""
        gold_names = {c.name for c in example.calls}
        raw_tools = [t for t in example.tools if self._is_usable(t) or t["name"] in gold_names]
        if any(not self._is_usable(t) for t in raw_tools):
            self.dropped["unusable_gold_tool"] = self.dropped.get("unusable_gold_tool", 0) + 1
            return None
        tools = self.router.prepare_tools(raw_tools)
        messages = normalize_messages(example.messages)
        target = example.target_text()
        eos = self.router.tokenizer.eos_token_id
        target_ids = self._answer_ids(target) + [eos] if target else []
        names = [t.name for t in tools]
        gold = [names.index(c.name) for c in example.calls if c.name in names]
        list_steps = list_step_positions([self.router.token_texts[i] for i in target_ids])
        return PreparedExample(tools, self.router.prompt_ids(messages), target_ids, gold, selection_text(messages),
                               list_steps)

    def _answer_ids(self, target: str) -> list[int]:
        """Token ids of a call list's text; with `split_list_steps`, "[call", ",call"… and "]" tokenized apart."""
        if not self.config.split_list_steps:
            return self.router.tokenizer(target, add_special_tokens=False)["input_ids"]
        calls = [orjson.dumps(call).decode() for call in orjson.loads(target)]
        pieces = ["[" + calls[0], *("," + call for call in calls[1:]), "]"]
        if "".join(pieces) != target:
            raise ValueError(f"a call list renders differently on its own: {target[:80]!r}")
        return [i for piece in pieces for i in self.router.tokenizer(piece, add_special_tokens=False)["input_ids"]]

    # ------------------------------------------------------------------------------------ batches
    def _stage_items(self, stage: StageConfig) -> list:
        if stage.name == "autoencode":
            return self.catalog
        if stage.name in ("contrastive", "selection"):
            return [e for e in self.examples if e.gold_tool_indexes]
        if stage.name == "calling":
            return (self.examples + (self._composed(stage.composed_examples) if stage.composed_examples else [])
                    + (self._agent_turns(stage.agent_turns) if stage.agent_turns else [])
                    + (self._masked(stage.masked_examples) if stage.masked_examples else []))
        return self.examples

    def _composed(self, count: int) -> list[PreparedExample]:
        """`count` two-call examples composed from the training examples (seeded; prepared once per count)."""
        if count not in self._composed_examples:
            raw = compose_multi_call(self.raw_examples, count, random.Random(f"{self.config.seed}:composed:{count}"))
            self._composed_examples[count] = [p for p in map(self._prepare, raw) if p is not None]
        return self._composed_examples[count]

    def _agent_turns(self, count: int) -> list[PreparedExample]:
        """`count` later steps of agent turns over the training examples (seeded; prepared once per count)."""
        if count not in self._agent_turn_examples:
            raw = agent_turns(self.raw_examples, count, random.Random(f"{self.config.seed}:agent_turns:{count}"))
            self._agent_turn_examples[count] = [p for p in map(self._prepare, raw) if p is not None]
        return self._agent_turn_examples[count]

    def _masked(self, count: int) -> list[PreparedExample]:
        """`count` training examples with their tool and parameter names masked (`training.everyday.mask_names`;
        drawn and masked seeded, prepared once per count)."""
        if count not in self._masked_examples:
            rng = random.Random(f"{self.config.seed}:masked:{count}")
            drawn = rng.sample(self.raw_examples, min(count, len(self.raw_examples)))
            self._masked_examples[count] = [p for p in (self._prepare(mask_names(e, rng)) for e in drawn)
                                            if p is not None]
        return self._masked_examples[count]

    def stage_steps(self, stage: StageConfig) -> int:
        if stage.steps is not None:
            steps = stage.steps
        else:
            per_epoch = math.ceil(len(self._stage_items(stage)) / (stage.batch_size * stage.grad_accum))
            steps = max(1, math.ceil(per_epoch * stage.epochs))
        return min(steps, stage.max_steps) if stage.max_steps else steps

    def _micro_batch(self, stage_index: int, stage: StageConfig, step: int, micro: int) -> dict[str, Any]:
        """Deterministic in (seed, stage, step, micro): resuming reproduces the same batches."""
        items = self._stage_items(stage)
        size = stage.batch_size
        per_epoch = max(1, math.ceil(len(items) / size))
        index = step * stage.grad_accum + micro
        epoch, position = divmod(index, per_epoch)
        order = list(range(len(items)))
        random.Random(f"{self.config.seed}:{stage_index}:{epoch}").shuffle(order)
        chosen = [items[i] for i in order[position * size : (position + 1) * size]] or [items[order[0]]]
        rng = random.Random(f"{self.config.seed}:{stage_index}:{step}:{micro}")
        if stage.name == "autoencode":
            return {"tools": chosen}
        contrastive = [i for i, e in enumerate(chosen) if e.gold_tool_indexes
                       and (stage.name == "contrastive" or stage.contrastive_weight)]
        batch = {"examples": chosen, "contrastive": contrastive,
                 "negatives": [self._hard_negatives(chosen[i], stage.negatives, rng) for i in contrastive]}
        if stage.ae_weight and rng.random() < stage.ae_fraction:
            batch["ae_tools"] = list({t.schema_hash: t for e in chosen for t in
                                      [e.tools[j] for j in e.gold_tool_indexes]}.values())[:size]
        return batch

    def _hard_negatives(self, example: PreparedExample, count: int, rng: random.Random) -> list[Tool]:
        """The `count` catalog tools whose mean encoder state is closest to the gold tool's (other names)."""
        gold = example.tools[example.gold_tool_indexes[0]]
        if not self.bank.frozen:
            pool = [t for t in self.catalog if t.name != gold.name]
            return rng.sample(pool, min(count, len(pool)))
        vectors = self._catalog_vectors()
        similarity = vectors @ vectors[self._catalog_index[gold.schema_hash]]
        ranked = similarity.argsort(descending=True).tolist()
        return [self.catalog[i] for i in ranked if self.catalog[i].name != gold.name][:count]

    def _catalog_vectors(self) -> torch.Tensor:
        if self._vectors is None:
            keys = [self.bank.tool_key(t) for t in self.catalog]
            self.bank.precompute(keys)
            self._catalog_index = {t.schema_hash: i for i, t in enumerate(self.catalog)}
            self._vectors = F.normalize(torch.stack([self.bank._states[k].float().mean(0) for k in keys]), dim=-1)
        return self._vectors

    # ------------------------------------------------------------------------------------ run
    def run(self, *, stages: Sequence[str] | None = None, resume: bool = False,
            stop_after_steps: int | None = None) -> Path:
        """Train the selected stages (all by default; by name, or by position from "1") and write the final
        checkpoint; returns its folder.

        `stop_after_steps` ends the run after that many optimizer steps in this call (as if the process
        were killed right after a checkpoint; used by tests and time-boxed runs).
        """
        self.output_dir.mkdir(parents=True, exist_ok=True)
        selected = [i for i, s in enumerate(self.config.stages)
                    if stages is None or s.name in stages or str(i + 1) in stages]
        progress = self._load_state() if resume else {"stage_index": selected[0] if selected else 0, "step": 0,
                                                      "global_step": 0, "elapsed_s": 0.0}
        if resume:
            self._trim_log(progress["global_step"])
        self._precompute_bank()
        taken = 0
        for stage_index in selected:
            if stage_index < progress["stage_index"]:
                continue
            stage = self.config.stages[stage_index]
            start = progress["step"] if stage_index == progress["stage_index"] else 0
            if stage_index != progress["stage_index"] or not resume:
                self._new_optimizer(stage)
            taken += self._run_stage(stage_index, stage, start, progress, stop_after_steps, taken)
            if stop_after_steps is not None and taken >= stop_after_steps:
                return self.output_dir / "state"
            progress.update(stage_index=stage_index + 1, step=0)
            resume = False
        return self._save_final()

    def _precompute_bank(self) -> None:
        keys = [self.bank.tool_key(t) for t in self.catalog]
        keys += [self.bank.text_key(e.query_text) for e in self.examples]
        self.bank.precompute(keys)

    def _new_optimizer(self, stage: StageConfig) -> None:
        self._select_trainable(stage.train_only)
        total = self.stage_steps(stage)
        warmup = stage.warmup_steps if stage.warmup_steps is not None else int(stage.warmup_ratio * total)
        named = self.trainable_parameters()
        gates = [(n, p) for n, p in named if n.endswith(".gate")]
        others = [(n, p) for n, p in named if not n.endswith(".gate")]
        groups = [{"params": [p for _, p in others], "lr": stage.lr},
                  {"params": [p for _, p in gates], "lr": stage.gate_lr or stage.lr}]
        self._optimizer_names = [n for n, _ in others + gates]  # the optimizer's parameter index order
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        self.wrapped, self.optimizer, self.scheduler = self.accelerator.prepare(self.module, optimizer, scheduler)

    def _run_stage(self, stage_index: int, stage: StageConfig, start: int, progress: dict, stop_after: int | None,
                   taken_before: int) -> int:
        total = self.stage_steps(stage)  # what the learning-rate schedule spans
        end = min(total, stage.end_at_step or total)
        self.router.model.train()
        bar = tqdm(range(start, end), initial=start, total=end, desc=f"stage {stage.name}", unit="step",
                   disable=not self.accelerator.is_local_main_process)
        taken, started, out_of_time = 0, time.perf_counter(), False
        for step in bar:
            step_started = time.perf_counter()
            parts_sum: dict[str, float] = {}
            parts_count: dict[str, int] = {}
            examples = 0
            for micro in range(stage.grad_accum):
                batch = self._micro_batch(stage_index, stage, step, micro)
                sync = micro == stage.grad_accum - 1
                context = self.accelerator.no_sync(self.wrapped) if not sync else nullcontext()
                with context, self.accelerator.autocast():
                    parts = self.wrapped(stage.name, batch, stage)
                    self.accelerator.backward(parts["loss"] / stage.grad_accum)
                for key, value in parts.items():
                    parts_sum[key] = parts_sum.get(key, 0.0) + float(value.detach())
                    parts_count[key] = parts_count.get(key, 0) + 1
                examples += len(batch.get("examples", batch.get("tools", [])))
            tokens = int(parts_sum.pop("tokens", 0))
            parts_sum = {key: value / parts_count[key] for key, value in parts_sum.items()}  # mean where computed
            if self.config.grad_clip:
                self.accelerator.clip_grad_norm_([p for _, p in self.trainable_parameters()], self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - step_started
            progress.update(stage_index=stage_index, step=step + 1, global_step=progress["global_step"] + 1,
                            elapsed_s=progress["elapsed_s"] + seconds)
            taken += 1
            bar.set_postfix(loss=f"{parts_sum['loss']:.3f}")
            if (step + 1) % self.config.log_every == 0 or step + 1 == end or step == start:
                self._log({"stage": stage.name, "step": step + 1, "stage_steps": total, **progress,
                           **{k: round(v, 5) for k, v in parts_sum.items()}, "lr": self.scheduler.get_last_lr()[0],
                           "gates": [round(math.tanh(float(b.gate.detach())), 5) for b in self.router.model.cross_attention.values()],
                           "examples_per_s": examples / seconds, "tokens_per_s": tokens / seconds})
            last = stop_after is not None and taken_before + taken >= stop_after
            out_of_time = stage.max_minutes is not None and time.perf_counter() - started > 60 * stage.max_minutes
            if (step + 1) % self.config.checkpoint_every == 0 or step + 1 == end or last or out_of_time:
                self._save_state(progress)
            if last or out_of_time:
                break
        bar.close()
        self.router.model.eval()
        self._log({"stage": stage.name, "event": "stage_end", "steps_this_run": taken,
                   "wall_s": time.perf_counter() - started, "cut_by_max_minutes": out_of_time})
        return taken

    def _trim_log(self, global_step: int) -> None:
        """Drop the log records from the first one past `global_step` on: steps logged after the saved state
        by the interrupted process (run again now) and anything after them, so the log holds one history."""
        if not self.accelerator.is_main_process or not self.log_path.is_file():
            return
        kept = []
        for line in self.log_path.read_bytes().splitlines(keepends=True):
            if orjson.loads(line).get("global_step", 0) > global_step:
                break
            kept.append(line)
        self.log_path.write_bytes(b"".join(kept))

    def _log(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        with self.log_path.open("ab") as handle:
            handle.write(orjson.dumps({"time": time.time(), **record}) + b"\n")

    # ------------------------------------------------------------------------------------ state
    def _save_state(self, progress: dict) -> None:
        """Atomically write trainable weights, optimizer moments, scheduler, progress and RNG (no pickle)."""
        if not self.accelerator.is_main_process:
            return
        staging = self.output_dir / "state.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        named = self.trainable_parameters()
        save_file({n: p.detach().cpu().contiguous() for n, p in named}, staging / "trainable.safetensors")
        optimizer = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        state = optimizer.state_dict()
        moments, steps = {}, {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    moments[f"{index}.{key}"] = value.detach().cpu().contiguous()
                else:
                    steps[f"{index}.{key}"] = float(value)
        save_file(moments or {"empty": torch.zeros(1)}, staging / "optimizer.safetensors")
        save_file({"torch_rng": torch.get_rng_state()}, staging / "rng.safetensors")
        scheduler = self.scheduler.scheduler if hasattr(self.scheduler, "scheduler") else self.scheduler
        meta = {"progress": progress, "optimizer_scalars": steps,
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]],
                "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
                "trainable_names": [n for n, _ in named], "optimizer_names": self._optimizer_names}
        (staging / "progress.json").write_text(json.dumps(meta, indent=2))
        final = self.output_dir / "state"
        old = self.output_dir / "state.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)

    def _load_state(self) -> dict:
        folder = self.output_dir / "state"
        if not (folder / "progress.json").is_file():
            raise FileNotFoundError(f"nothing to resume: {folder} has no saved state")
        meta = json.loads((folder / "progress.json").read_text())
        weights = load_file(folder / "trainable.safetensors")
        named = dict(self.router.model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights.items():
                named[name].copy_(tensor)
        progress = meta["progress"]
        stage = self.config.stages[progress["stage_index"]]
        self._new_optimizer(stage)
        optimizer = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        moments = load_file(folder / "optimizer.safetensors")
        # saved optimizer index -> current one, by parameter name (a parameter added since starts fresh)
        trained = meta["trainable_names"]
        saved_names = meta.get("optimizer_names") or ([n for n in trained if not n.endswith(".gate")]
                                                      + [n for n in trained if n.endswith(".gate")])
        current = {name: index for index, name in enumerate(self._optimizer_names)}
        missing = [name for name in saved_names if name not in current]
        if missing:
            raise ValueError(f"cannot resume: the saved state trains {missing[:3]}…, which this run does not")
        state: dict[int, dict[str, Any]] = {}
        for key, value in [*moments.items(), *meta["optimizer_scalars"].items()]:
            if key != "empty":
                index, name = key.split(".", 1)
                value = value if torch.is_tensor(value) else torch.tensor(value)
                state.setdefault(current[saved_names[int(index)]], {})[name] = value
        groups = [{**g, "params": old["params"]} for g, old in zip(meta["param_groups"], optimizer.state_dict()["param_groups"])]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        scheduler = self.scheduler.scheduler if hasattr(self.scheduler, "scheduler") else self.scheduler
        scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
        torch.set_rng_state(load_file(folder / "rng.safetensors")["torch_rng"])
        return progress

    def _save_final(self) -> Path:
        folder = self.output_dir / "checkpoint"
        if self.accelerator.is_main_process:
            extra = {}
            if self.config.trainable == "full":
                new = {id(p) for m in self.router.model.new_modules().values() for p in m.parameters()}
                extra = {n: p for n, p in self.trainable_parameters() if id(p) not in new}
            save_checkpoint(self.router.model, folder, extra_state=extra, dtype=torch.float16)
        return folder


def train_from_config(config: TrainConfig, *, stages: Sequence[str] | None = None, resume: bool = False,
                      load_examples: Callable[[TrainConfig], Sequence[Any]] | None = None,
                      init_from: str | Path | None = None) -> Path:
    """Build the router from `config.backbone`, load the prepared training split, run the curriculum.

    `init_from` (default: `config.init_from`): a checkpoint folder whose weights the run starts from (e.g.
    `stages=["selection"]` on the checkpoint of the recipe's earlier stages), or another recipe's YAML, trained
    first when its checkpoint is missing; tensors it lacks keep their initialisation, and are listed."""
    from toolformer_router import RouterConfig
    from toolformer_router.checkpoint import load_weights

    from .data import load_prepared, prepare

    init_from = init_from if init_from is not None else config.init_from
    if init_from is not None and Path(init_from).suffix in (".yaml", ".yml"):
        base = TrainConfig.from_yaml(init_from)
        checkpoint = Path(base.output_dir) / "checkpoint"
        if not (checkpoint / "router.safetensors").is_file():
            print(f"training {init_from} first: this recipe starts from its checkpoint")
            train_from_config(base, resume=resume and (Path(base.output_dir) / "state").is_dir(),
                              load_examples=load_examples)
            resume = False  # this recipe's own stages start now
        init_from = checkpoint
    router = ToolRouter.from_backbone(config.backbone, config=RouterConfig(backbone=config.backbone, **config.router))
    if init_from is not None:
        missing = load_weights(router.model, init_from, allow_missing=True)
        if missing:
            print(f"starting from {init_from}; not in it, initialised: {', '.join(missing)}")
    if load_examples is None:
        data_dir = Path(config.data_dir)
        if not (data_dir / "train.jsonl").is_file():
            prepare(data_dir, seed=config.seed, **config.prepare)
        examples = load_prepared(data_dir, "train")
    else:
        examples = load_examples(config)
    return Curriculum(config, router, examples).run(stages=stages, resume=resume)
