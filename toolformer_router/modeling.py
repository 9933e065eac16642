"""The router model: a pretrained decoder-only backbone split into a tool encoder and a query decoder.

    tool schema tokens (T, S) --encoder layers 0..E--> (T, S, d) --GistPooling--> gists (T, K, d)
    gists --GatedCrossAttention.project_memory--> per-layer keys/values (T, L, 2, kv_heads, K, head_dim)
    query tokens (B, Q) --decoder layers, each listed one followed by GatedCrossAttention over the
                          concatenated gists of the request's tools--> norm --> lm_head --> (B, Q, vocab)

The backbone's own modules (decoder layers, rotary embedding, RMSNorm, attention kernels, KV cache,
mask builders) are reused as they are; only `GistPooling`, `GatedCrossAttention` and `ToolSelector` are new.
Every gate starts at 0, so at initialisation the decoder computes exactly what the wrapped backbone layers
compute.

    query text tokens (B, Q) --encoder layers--> (B, Q, d) --ToolSelector--> query vector (B, dim)
    gists (T, K, d) --ToolSelector--> tool vectors (T, dim); score = scale * cosine: which tool a call names
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache, PreTrainedModel
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from .config import RouterConfig


def pad_right(sequences: list[list[int]], *, device, pad_id: int = 0):
    """Right-pad token lists -> (ids (n, L), mask (n, L))."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)


class GistPooling(nn.Module):
    """Perceiver-style pooling: K learned queries attend to one tool's encoder states.

    (tools, schema_len, d) + padding mask (tools, schema_len) -> gists (tools, K, d).
    """

    def __init__(self, *, hidden_size: int, num_gists: int, num_heads: int, norm: type[nn.Module], eps: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by gist_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, hidden_size // num_heads
        self.queries = nn.Parameter(torch.zeros(num_gists, hidden_size))
        self.query_norm = norm(hidden_size, eps=eps)
        self.context_norm = norm(hidden_size, eps=eps)
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tools, length, _ = hidden_states.shape
        queries = self.q_proj(self.query_norm(self.queries))  # (K, d)
        queries = queries.view(1, -1, self.num_heads, self.head_dim).transpose(1, 2).expand(tools, -1, -1, -1)
        context = self.context_norm(hidden_states)
        keys = self.k_proj(context).view(tools, length, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.v_proj(context).view(tools, length, self.num_heads, self.head_dim).transpose(1, 2)
        mask = attention_mask.bool()[:, None, None, :]  # (tools, 1, 1, schema_len)
        pooled = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)  # (tools, h, K, hd)
        pooled = pooled.transpose(1, 2).reshape(tools, -1, self.num_heads * self.head_dim)
        return self.queries + self.o_proj(pooled)


class GatedCrossAttention(nn.Module):
    """`h + tanh(gate) * CrossAttn(RMSNorm(h), gists)`, gate initialised to 0; memory has no positions.

    Keys and values of the memory depend on the gists alone, so they are computed once per tool
    (`project_memory`) and cached beside the gists.
    """

    def __init__(
        self, *, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, norm: type[nn.Module], eps: float
    ):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.norm = norm(hidden_size, eps=eps)
        self.memory_norm = norm(hidden_size, eps=eps)
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.gate = nn.Parameter(torch.zeros(1))

    def project_memory(self, gists: torch.Tensor) -> torch.Tensor:
        """(tools, K, d) -> stacked keys and values (tools, 2, kv_heads, K, head_dim)."""
        tools, num_gists, _ = gists.shape
        memory = self.memory_norm(gists)
        keys = self.k_proj(memory).view(tools, num_gists, self.num_kv_heads, self.head_dim).transpose(1, 2)
        values = self.v_proj(memory).view(tools, num_gists, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return torch.stack([keys, values], dim=1)

    def forward(
        self, hidden_states: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """hidden (B, Q, d); keys/values (B, kv_heads, M, head_dim); memory_mask (B, M) bool -> (B, Q, d)."""
        batch, length, _ = hidden_states.shape
        queries = self.q_proj(self.norm(hidden_states)).view(batch, length, self.num_heads, self.head_dim)
        attended = F.scaled_dot_product_attention(
            queries.transpose(1, 2), keys, values, attn_mask=memory_mask[:, None, None, :], enable_gqa=True
        )
        attended = attended.transpose(1, 2).reshape(batch, length, -1)
        has_memory = memory_mask.any(dim=1)[:, None, None]  # a request without tools attends to nothing
        attended = torch.where(has_memory, attended, torch.zeros_like(attended))
        return hidden_states + torch.tanh(self.gate) * self.o_proj(attended)


class ToolSelector(nn.Module):
    """Scores the active tools against the query, to pick the tool a call names (a dual encoder over the
    router's own representations: no second model).

    query: `num_heads` learned queries pool the query text's encoder states -> (B, dim), unit length;
    tool: the mean of its gists, normed and projected -> (T, dim), unit length; score = exp(logit_scale) * cosine.
    """

    def __init__(self, *, hidden_size: int, dim: int, num_heads: int, norm: type[nn.Module], eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"selector_dim {dim} is not divisible by selector_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.query = nn.Parameter(torch.zeros(num_heads, 1, self.head_dim))
        self.context_norm = norm(hidden_size, eps=eps)
        self.k_proj = nn.Linear(hidden_size, dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, dim, bias=False)
        self.tool_norm = norm(hidden_size, eps=eps)
        self.tool_proj = nn.Linear(hidden_size, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.zeros(()))

    def query_vectors(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states (B, Q, d), right-padded, + mask (B, Q) -> (B, dim) unit vectors."""
        batch, length, _ = hidden_states.shape
        context = self.context_norm(hidden_states)
        keys = self.k_proj(context).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.v_proj(context).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Q)
        queries = self.query.to(keys.dtype).expand(batch, -1, -1, -1)  # (B, heads, 1, head_dim)
        pooled = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)  # (B, heads, 1, hd)
        return F.normalize(pooled.reshape(batch, -1).float(), dim=-1)

    def tool_vectors(self, gists: torch.Tensor) -> torch.Tensor:
        """Gists (T, K, d) -> (T, dim) unit vectors."""
        return F.normalize(self.tool_proj(self.tool_norm(gists.mean(dim=1))).float(), dim=-1)

    def scores(self, query_vectors: torch.Tensor, tool_vectors: torch.Tensor) -> torch.Tensor:
        """(B, dim) x (B, T, dim) -> (B, T) logits."""
        return torch.einsum("bd,btd->bt", query_vectors, tool_vectors) * self.logit_scale.exp().clamp(max=100.0)


@dataclass
class GistMemory:
    """The gist keys/values a batch of requests attends to, padded to the longest request.

    keys, values: (cross_layers, batch, kv_heads, tools·K, head_dim); mask: (batch, tools·K) bool.
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor

    @staticmethod
    def flatten(tool_memories: torch.Tensor) -> torch.Tensor:
        """Per-tool memories (n, L, 2, kvh, K, hd) -> one request's memory (L, 2, kvh, n·K, hd)."""
        tools, layers, _, kv_heads, num_gists, head_dim = tool_memories.shape
        return tool_memories.permute(1, 2, 3, 0, 4, 5).reshape(layers, 2, kv_heads, tools * num_gists, head_dim)

    @classmethod
    def batch(cls, per_request: list[torch.Tensor], template: torch.Tensor) -> GistMemory:
        """Pad flattened request memories (L, 2, kvh, M_i, hd) into one batch; a single request is not copied.

        `template` is any (L, 2, kvh, ·, hd) tensor fixing dtype and device (for requests without tools).
        """
        if len(per_request) == 1 and per_request[0].shape[3] > 0:
            (memory,) = per_request
            mask = torch.ones(1, memory.shape[3], dtype=torch.bool, device=memory.device)
            return cls(keys=memory[:, 0].unsqueeze(1), values=memory[:, 1].unsqueeze(1), mask=mask)
        layers, _, kv_heads, _, head_dim = template.shape
        longest = max(1, max(m.shape[3] for m in per_request))
        keys = template.new_zeros(layers, len(per_request), kv_heads, longest, head_dim)
        values = torch.zeros_like(keys)
        mask = torch.zeros(len(per_request), longest, dtype=torch.bool, device=template.device)
        for row, memory in enumerate(per_request):
            size = memory.shape[3]
            keys[:, row, :, :size] = memory[:, 0]
            values[:, row, :, :size] = memory[:, 1]
            mask[row, :size] = True
        return cls(keys=keys, values=values, mask=mask)

    def select(self, rows: torch.Tensor) -> GistMemory:
        return GistMemory(self.keys[:, rows], self.values[:, rows], self.mask[rows])


class ToolRouterModel(nn.Module):
    """Gist encoder + gated cross-attention decoder around a Llama/Qwen2 `*ForCausalLM` backbone."""

    def __init__(self, backbone: PreTrainedModel, config: RouterConfig):
        super().__init__()
        self.config = config
        self.backbone_config = backbone.config
        text_model = backbone.model
        layers = text_model.layers
        num_layers = len(layers)
        start, end = config.resolved_decoder_layers(num_layers)
        self.decoder_layer_ids = list(range(start, end))
        self.cross_attention_layer_ids = config.resolved_cross_attention_layers(num_layers)
        self.embed_tokens = text_model.embed_tokens
        self.rotary_emb = text_model.rotary_emb
        self.norm = text_model.norm
        self.lm_head = backbone.lm_head
        encoder = layers[: config.encoder_layers]
        self.encoder_layers = nn.ModuleList(encoder if config.share_encoder_layers else copy.deepcopy(encoder))
        self.decoder_layers = nn.ModuleList(layers[start:end])
        for cache_index, layer in enumerate(self.decoder_layers):
            layer.self_attn.layer_idx = cache_index  # the decoder's KV cache holds only its own layers
        layer_types = getattr(self.backbone_config, "layer_types", None) or ["full_attention"] * num_layers
        self.decoder_config = copy.deepcopy(self.backbone_config)
        self.decoder_config.num_hidden_layers = end - start
        self.decoder_layer_types = list(layer_types[start:end])
        if getattr(self.decoder_config, "layer_types", None) is not None:
            self.decoder_config.layer_types = self.decoder_layer_types

        hidden, eps = self.backbone_config.hidden_size, self.backbone_config.rms_norm_eps
        norm = type(text_model.norm)
        self.gist_pooling = GistPooling(
            hidden_size=hidden, num_gists=config.num_gists, num_heads=config.gist_heads, norm=norm, eps=eps
        )
        self.cross_attention = nn.ModuleDict(
            {
                str(i): GatedCrossAttention(
                    hidden_size=hidden,
                    num_heads=config.cross_attention_heads,
                    num_kv_heads=config.cross_attention_kv_heads,
                    head_dim=config.cross_attention_head_dim,
                    norm=norm,
                    eps=eps,
                )
                for i in self.cross_attention_layer_ids
            }
        )
        self.selector = ToolSelector(
            hidden_size=hidden, dim=config.selector_dim, num_heads=config.selector_heads, norm=norm, eps=eps,
        )
        self.init_new_modules(seed=0)
        self._fingerprint: tuple[tuple, str] | None = None
        if config.lora:
            self.add_lora(**config.lora)

    def add_lora(self, *, r: int, alpha: int, modules: list[str], dropout: float = 0.0) -> None:
        """Wrap the named backbone modules (e.g. "decoder_layers.12.self_attn.q_proj") with LoRA adapters (peft)."""
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as error:
            raise ImportError("LoRA needs peft: pip install 'toolformer-router[train]'") from error
        inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules), self)
        self.config = self.config.model_copy(update={"lora": {"r": r, "alpha": alpha, "modules": modules}})

    # ----------------------------------------------------------------------------------- weights
    def new_modules(self) -> dict[str, nn.Module]:
        """The modules the backbone does not have: what an untrained checkpoint must still contain."""
        return {"gist_pooling": self.gist_pooling, "cross_attention": self.cross_attention, "selector": self.selector}

    def new_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of the new modules and of any LoRA adapters: what a checkpoint must contain."""
        state = {f"{prefix}.{name}": tensor for prefix, module in self.new_modules().items()
                 for name, tensor in module.state_dict().items()}
        state.update({name: tensor for name, tensor in self.state_dict().items() if ".lora_" in name})
        return state

    @torch.no_grad()
    def init_new_modules(self, seed: int = 0, names: Sequence[str] | None = None) -> None:
        """Seeded initialisation (normal, backbone's initializer_range; gates 0; norms 1; selector
        temperature 0.07) of the new modules, or only of those in `names` (keys of `new_modules()`)."""
        generator = torch.Generator().manual_seed(seed)
        std = getattr(self.backbone_config, "initializer_range", 0.02)
        for key, module in self.new_modules().items():
            if names is not None and key not in names:
                continue
            for name, parameter in module.named_parameters():
                if name.endswith("gate"):
                    parameter.zero_()
                elif name.endswith("logit_scale"):
                    parameter.fill_(math.log(1 / 0.07))
                elif name.endswith("norm.weight"):
                    parameter.fill_(1.0)
                else:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
        self._fingerprint = None

    def memory_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """Every parameter a tool's cached gists and memory keys/values depend on."""
        named = [("embed_tokens." + n, p) for n, p in self.embed_tokens.named_parameters()]
        named += [("encoder_layers." + n, p) for n, p in self.encoder_layers.named_parameters()]
        named += [("gist_pooling." + n, p) for n, p in self.gist_pooling.named_parameters()]
        for key, block in self.cross_attention.items():
            for part in (block.memory_norm, block.k_proj, block.v_proj):
                named += [(f"cross_attention.{key}.{n}", p) for n, p in part.named_parameters()]
        return named

    def memory_fingerprint(self) -> str:
        """sha256 over the weights that produce tools' memory; recomputed only after weights change."""
        named = self.memory_parameters()
        versions = tuple((id(p), p._version, p.dtype, p.device) for _, p in named)
        if self._fingerprint is not None and self._fingerprint[0] == versions:
            return self._fingerprint[1]
        digest = hashlib.sha256(self.config.model_dump_json(include={"num_gists", "max_schema_tokens"}).encode())
        for name, parameter in named:
            digest.update(name.encode())
            data = parameter.detach().to("cpu").contiguous()
            digest.update(str(data.dtype).encode())
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        fingerprint = digest.hexdigest()
        self._fingerprint = (versions, fingerprint)
        return fingerprint

    # ----------------------------------------------------------------------------------- encoder
    def encode_tools(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Schema tokens (tools, S), right-padded, + mask (tools, S) -> gists (tools, K, d)."""
        return self.gist_pooling(self.encoder_states(input_ids, attention_mask), attention_mask)

    def encoder_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids (n, S), right-padded, + mask (n, S) -> encoder layers' output (n, S, d), before pooling."""
        hidden = self.embed_tokens(input_ids)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        mask = create_causal_mask(
            config=self.backbone_config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
            position_ids=positions,
        )
        position_embeddings = self.rotary_emb(hidden, positions)
        for layer in self.encoder_layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=position_embeddings)
        return hidden

    def project_memory(self, gists: torch.Tensor) -> torch.Tensor:
        """gists (tools, K, d) -> every cross-attention layer's keys/values (tools, L, 2, kv_heads, K, hd)."""
        return torch.stack([block.project_memory(gists) for block in self.cross_attention.values()], dim=1)

    # ----------------------------------------------------------------------------------- decoder
    def new_cache(self) -> DynamicCache:
        return DynamicCache(config=self.decoder_config)

    def _masks(self, hidden, attention_mask, cache, positions) -> dict[str, torch.Tensor | None]:
        kwargs = dict(
            config=self.decoder_config, inputs_embeds=hidden, attention_mask=attention_mask, cache=cache,
            position_ids=positions,
        )
        masks = {"full_attention": create_causal_mask(**kwargs)}
        if "sliding_attention" in self.decoder_layer_types:
            masks["sliding_attention"] = create_sliding_window_causal_mask(**kwargs)
        return masks

    def decode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        memory: GistMemory | None,
        cache: DynamicCache | None = None,
        no_grad_layers: int = 0,
    ) -> torch.Tensor:
        """New tokens (B, T) with positions (B, T); attention_mask (B, past+T) over cache and new tokens.

        Returns final-norm hidden states (B, T, d); `self.lm_head` turns the ones needed into logits.
        `no_grad_layers`: the first n decoder layers run without autograd (training with a frozen backbone
        below the first cross-attention saves their backward pass).
        """
        hidden = self.embed_tokens(input_ids)
        masks = self._masks(hidden, attention_mask, cache, position_ids)
        position_embeddings = self.rotary_emb(hidden, position_ids)
        use_cache = cache is not None
        cross_index = 0
        layers = zip(self.decoder_layer_ids, self.decoder_layers, self.decoder_layer_types)
        for index, (layer_id, layer, layer_type) in enumerate(layers):
            with torch.set_grad_enabled(torch.is_grad_enabled() and index >= no_grad_layers):
                hidden = layer(
                    hidden, attention_mask=masks[layer_type], position_ids=position_ids, cache=cache,
                    use_cache=use_cache, position_embeddings=position_embeddings,
                )
            block = self.cross_attention[str(layer_id)] if str(layer_id) in self.cross_attention else None
            if block is not None and memory is not None:
                hidden = block(hidden, memory.keys[cross_index], memory.values[cross_index], memory.mask)
            cross_index += block is not None
        return self.norm(hidden)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute backbone layers in the backward pass instead of storing their activations."""
        for layer in {id(m): m for m in [*self.encoder_layers, *self.decoder_layers]}.values():
            layer.gradient_checkpointing = enabled
            layer._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: GistMemory | None
    ) -> torch.Tensor:
        """Full-sequence logits (B, T, vocab) for right-padded input (B, T) and mask (B, T); no cache."""
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.lm_head(self.decode(input_ids, attention_mask, positions, memory))
