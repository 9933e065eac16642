"""LangChain's standard conformance suites (`langchain-tests`) for ChatToolFormer.

Unit suite: a scripted router (no model). Integration suite: the real default checkpoint on the CPU
(marked `slow`). Capability flags are set to what the router really does. The structured-output and unicode
tests that failed while greedy decoding looped inside values pass since the decoder's loop guard
(docs/grammar.md). `test_tool_calling` (sync and async) is a strict xfail for the default (since stop 16): it reads
"magic_function(3)" as input 1 when the schema bounds the integer to (-1000, 1000). It gives 3 without the bounds,
and 5, 7, 42 and 250 right with them; the stop-13 default gave 3 (model card, known limitations). JSON mode runs
(`supports_json_mode`): its answer is decoded under the grammar too. `test_serdes` is a strict xfail: the suite
loads with `allowed_objects="all"`, which admits only langchain's own classes. `test_stream_time` runs
(`enable_vcr_tests`; the VCR settings are the suite's own, in conftest.py): the router records no HTTP traffic.
Anthropic-style inputs run (`supports_anthropic_inputs`): text and tool_use blocks are read, thinking skipped.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from scripted import ScriptedRouter, text

from toolformer_router.adapters.langchain import ChatToolFormer


class ChatToolFormerFlags:
    """The capability flags both suites read: what the router really does."""

    @property
    def chat_model_class(self) -> type[ChatToolFormer]:
        return ChatToolFormer

    @property
    def standard_chat_model_params(self) -> dict:
        """The suite's standard parameters less those an in-process router refuses by name (`timeout`,
        `max_retries`, `api_key`: test_langchain_adapter checks the refusals)."""
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def has_tool_choice(self) -> bool:
        return True  # enforced by the grammar: "any"/"required"/a name must call, "none" cannot

    @property
    def supports_json_mode(self) -> bool:
        return True  # with_structured_output(method="json_mode"): a JSON object under the grammar

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True  # text and tool_use content blocks are read (images are not: supports_image_inputs)

    @property
    def supports_model_override(self) -> bool:
        return False


class TestChatToolFormerUnit(ChatToolFormerFlags, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {"router": ScriptedRouter(default=text("Hello!"))}

    @pytest.mark.xfail(reason="the suite loads with allowed_objects='all', which admits only the classes in "
                              "langchain_core's own mappings; ChatToolFormer loads with "
                              "allowed_objects=[ChatToolFormer] (test_langchain_adapter)",
                       raises=ValueError, strict=True)
    def test_serdes(self, model, snapshot) -> None:
        super().test_serdes(model, snapshot)  # the snapshot (no router object in it) is compared before the load


@pytest.mark.slow
class TestChatToolFormerIntegration(ChatToolFormerFlags, ChatModelIntegrationTests):
    @pytest.fixture
    def model(self, request, default_router) -> ChatToolFormer:
        extra = getattr(request, "param", None) or {}
        extra = {k: v for k, v in extra.items() if k != "output_version"}
        return ChatToolFormer(router=default_router, max_tokens=96, **extra)

    @property
    def chat_model_params(self) -> dict:
        return {"max_tokens": 96}

    @pytest.mark.xfail(reason="the default reads magic_function(3) as 1 under the schema's ±1000 bounds", strict=True)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)  # as the suite's own
    def test_tool_calling(self, model) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason="the default reads magic_function(3) as 1 under the schema's ±1000 bounds", strict=True)
    async def test_tool_calling_async(self, model) -> None:
        await super().test_tool_calling_async(model)

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": [], "stream": []}

    @property
    def enable_vcr_tests(self) -> bool:
        return True  # test_stream_time: the router makes no HTTP call, so its cassette stays empty
