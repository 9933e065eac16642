"""`LexicalMatcher` (BM25 over tool words) and its share of the router's selection score."""

import pytest
import torch

from conftest import EMAIL, STOCK, WEATHER, bfcl_training_side_tools
from toolformer_router import RouterConfig
from toolformer_router.lexical import LexicalMatcher
from toolformer_router.schema import normalize_tool

NESTED = {
    "name": "createInvoice",
    "description": "Create an invoice.",
    "parameters": {"type": "object", "properties": {
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string", "description": "Warehouse article number"}}}},
        "currency": {"type": "string", "enum": ["EUR", "Yen"]},
    }, "required": ["lines"]},
}


def test_words_split_case_and_punctuation_stem_and_drop_stop_words():
    matcher = LexicalMatcher()
    assert matcher.words("getWeatherByCity") == ["weather", "citi"]
    assert matcher.words("send_email to the Bob's mailboxes!") == ["send", "email", "bob", "s", "mailbox"]
    assert matcher.words("what is it, please?") == []


def test_tool_words_cover_name_description_and_nested_parameters():
    matcher = LexicalMatcher()
    words = matcher.tool_words(normalize_tool(NESTED))
    assert {"creat", "invoic", "line", "sku", "warehous", "articl", "number", "currenc", "eur", "yen"} <= set(words)
    assert words.count("invoic") == 2  # name and description both count


def test_coverage_is_the_share_of_request_words_the_tools_speak_of():
    matcher = LexicalMatcher()
    weather, email = normalize_tool(WEATHER), normalize_tool(EMAIL)
    text = "Email Bob the weather forecast"
    words = set(matcher.words(text))
    found = words & (set(matcher.tool_words(weather)) | set(matcher.tool_words(email)))
    assert 0 < len(found) < len(words)
    assert matcher.coverage(text, [weather, email]) == len(found) / len(words)
    assert matcher.coverage(text, [weather]) < matcher.coverage(text, [weather, email])  # the union counts
    assert matcher.coverage(text, []) == 0.0
    assert matcher.coverage("what is it?", [weather]) is None  # no content word: nothing to measure


def test_tool_words_are_cached_per_schema_and_bounded():
    matcher = LexicalMatcher(max_cached_tools=2)
    weather, email, stock = (normalize_tool(t) for t in (WEATHER, EMAIL, STOCK))
    first = matcher.tool_words(weather)
    assert matcher.tool_words(weather) is first
    matcher.tool_words(email)
    matcher.tool_words(stock)
    assert matcher.tool_words(weather) is not first  # evicted (least recently used), then recomputed
    assert matcher.tool_words(weather) == first


def test_scores_rank_the_matching_tool_first():
    matcher = LexicalMatcher()
    tools = [normalize_tool(t) for t in [EMAIL, STOCK, WEATHER, *bfcl_training_side_tools(12)]]
    for query, expected in (("What's the weather in Paris?", "get_weather"),
                            ("send an email to bob", "send_email")):
        scores = matcher.scores(query, tools)
        assert scores.shape == (len(tools),) and scores.dtype == torch.float32
        assert tools[int(scores.argmax())].name == expected, (query, scores)
    assert torch.equal(matcher.scores("please, what is it?", tools), torch.zeros(len(tools)))
    assert matcher.scores("weather", []).shape == (0,)


def test_bad_bm25_parameters_are_refused():
    with pytest.raises(ValueError, match="k1"):
        LexicalMatcher(k1=-1)
    with pytest.raises(ValueError, match="b="):
        LexicalMatcher(b=1.5)
    with pytest.raises(ValueError):
        RouterConfig(lexical_weight=-0.5)


def test_lexical_weight_adds_bm25_to_the_selector_logits(make_router):
    router = make_router()
    tools = router.prepare_tools([WEATHER, EMAIL, STOCK, *bfcl_training_side_tools(12)])
    query = "What's the weather in Paris?"
    learned = dict(router.rank_tools(query, tools))
    router.config.lexical_weight = 2.5
    try:
        fused = router.rank_tools(query, tools)
    finally:
        router.config.lexical_weight = 0.0
    bm25 = router.lexical.scores(query, tools)
    for tool, lexical in zip(tools, bm25.tolist()):
        assert dict(fused)[tool.name] == pytest.approx(learned[tool.name] + 2.5 * lexical, abs=1e-4)
    assert fused[0][0] == "get_weather"  # random selector weights: the word match decides


def test_add_tools_prepares_the_word_match_when_it_is_used(make_router):
    router = make_router()
    router.add_tools([WEATHER])
    assert len(router.lexical._tool_words) == 0  # lexical_weight 0: nothing to prepare
    router.config.lexical_weight = 1.0
    try:
        (email,) = router.add_tools([EMAIL])
    finally:
        router.config.lexical_weight = 0.0
    assert list(router.lexical._tool_words) == [email.schema_hash]
