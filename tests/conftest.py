"""Shared fixtures: tiny random Llama and Qwen2 backbones with the real SmolLM2 tokenizer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from toolformer_router import GistCache, RouterConfig, ToolRouter
from toolformer_router.backbone import resolve_backbone

FAMILIES = ("llama", "qwen2")

TINY_ROUTER_CONFIG = dict(
    encoder_layers=2, cross_attention_every=1, gist_heads=4, cross_attention_heads=4,
    cross_attention_kv_heads=2, cross_attention_head_dim=16, max_new_tokens=96,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
EMAIL = {
    "name": "send_email",
    "description": "Send an email.",
    "parameters": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}},
        "required": ["to", "body"],
    },
}
STOCK = {  # BFCL style: dict / float types
    "name": "stock.price",
    "description": "Price of a stock.",
    "parameters": {
        "type": "dict",
        "properties": {"ticker": {"type": "string"}, "days": {"type": "integer"}, "threshold": {"type": "float"}},
        "required": ["ticker"],
    },
}


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer (49,152 tokens) from the default backbone, converted once per cache home."""
    return AutoTokenizer.from_pretrained(resolve_backbone("default"))


def tiny_backbone(family: str, vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=2,
        eos_token_id=2, bos_token_id=1,
    )
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**common)).eval()


@pytest.fixture(scope="session")
def make_router(tokenizer):
    """Factory: a router around a fresh tiny backbone of one family, memory-only gist cache by default."""

    def make(family: str = "llama", *, seed: int = 0, gist_cache: GistCache | None = None, **overrides) -> ToolRouter:
        backbone = tiny_backbone(family, len(tokenizer), seed)
        config = RouterConfig(**{**TINY_ROUTER_CONFIG, **overrides})
        return ToolRouter.from_backbone(backbone, tokenizer, config, gist_cache=gist_cache)

    return make


@pytest.fixture(scope="session", params=FAMILIES)
def router_family(request, make_router) -> ToolRouter:
    """One shared tiny router per family (tests must not leave tools registered)."""
    return make_router(request.param)


def finishing_sampler(tokenizer, seed: int):
    """Turns greedy decoding of a random model into seeded sampling (Gumbel noise) with a bias towards
    tokens that open with a quote or a closing bracket, and EOS, so that outputs finish."""
    bias = torch.zeros(len(tokenizer))
    for token, i in tokenizer.get_vocab().items():
        if tokenizer.convert_tokens_to_string([token])[:1] in ('"', "}", "]"):
            bias[i] = 8.0
    bias[tokenizer.eos_token_id] = 8.0
    generator = torch.Generator().manual_seed(seed)

    def process(logits: torch.Tensor) -> torch.Tensor:
        uniform = torch.rand(logits.shape, generator=generator).clamp_min(1e-9)
        return logits + bias - torch.log(-torch.log(uniform))

    return process


def bfcl_training_side_tools(limit: int = 60) -> list[dict]:
    """Real BFCL function docs from the training-side `live_*` files of `bfcl-eval` (never imported)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None:
        pytest.skip("bfcl-eval is not installed (pip install --no-deps bfcl-eval)")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    tools: dict[str, dict] = {}
    for category in ("live_simple", "live_multiple", "live_parallel_multiple"):
        for line in (data / f"BFCL_v4_{category}.json").open():
            for function in json.loads(line)["function"]:
                tools.setdefault(function["name"], function)
    names = sorted(tools)
    step = max(1, len(names) // limit)
    return [tools[n] for n in names[::step]][:limit]


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def default_router():
    """The real default checkpoint on the CPU, shared by the adapters' end-to-end tests."""
    from toolformer_router.adapters._common import shared_router

    return shared_router("default", "cpu")


@pytest.fixture(scope="session")
def bench_agents():
    """`benchmarks/bench_agents.py` as a module (its tools, requests and scoring)."""
    import sys

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))  # the script imports its sibling `common`
    try:
        spec = importlib.util.spec_from_file_location("bench_agents", benchmarks / "bench_agents.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(benchmarks))
    return module


@pytest.fixture(scope="session")
def vcr_config() -> dict:
    """VCR settings of LangChain's standard suite (`test_stream_time`); the router records no HTTP traffic."""
    from langchain_tests.conftest import base_vcr_config

    return base_vcr_config()
