"""GPU checks (skipped without CUDA): bf16 routing on the device, and parity with the CPU at gate 0."""

import pytest
import torch
from jsonschema import Draft202012Validator

from conftest import EMAIL, WEATHER
from toolformer_router import ToolRouter

pytestmark = pytest.mark.gpu


def test_default_router_routes_valid_calls_on_cuda_in_bf16():
    router = ToolRouter.from_pretrained("default", device="cuda", disk_cache=False)
    assert router.device.type == "cuda" and router.model.lm_head.weight.dtype == torch.bfloat16
    router.add_tools([WEATHER, EMAIL])
    results = router.route_batch(["weather in Oslo?", "email bob@x.org: done"], tool_choice="required",
                                 max_new_tokens=64)
    schemas = {t.name: t.parameters for t in router.tools}
    for result in results:
        assert result.calls and result.finish_reason == "stop"
        for call in result.calls:
            Draft202012Validator(schemas[call.name]).validate(call.arguments)
    (entry,), _, _ = router.tool_memories(router.tools[:1])
    assert entry.gists.device.type == "cuda"  # the in-process tier lives on the model's device
