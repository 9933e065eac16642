"""LangChain's standard conformance suites (`langchain-tests`) for ChatToolFormer.

Unit suite: a scripted router (no model). Integration suite: the real default checkpoint on the CPU
(marked `slow`). Capability flags are set to what the router really does; tests that fail for a genuine
capability reason are listed in `KNOWN_GAPS` and marked xfail with that reason.
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
    def has_tool_choice(self) -> bool:
        return True  # enforced by the grammar: "any"/"required"/a name must call, "none" cannot

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False


class TestChatToolFormerUnit(ChatToolFormerFlags, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {"router": ScriptedRouter(default=text("Hello!")), "max_new_tokens": 64}


@pytest.mark.slow
class TestChatToolFormerIntegration(ChatToolFormerFlags, ChatModelIntegrationTests):
    @pytest.fixture
    def model(self, request, default_router) -> ChatToolFormer:
        extra = getattr(request, "param", None) or {}
        extra = {k: v for k, v in extra.items() if k != "output_version"}
        return ChatToolFormer(router=default_router, max_new_tokens=96, **extra)

    @property
    def chat_model_params(self) -> dict:
        return {"max_new_tokens": 96}

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": [], "stream": []}

    # ---- Known gaps: tests that fail on the shipped checkpoint for a genuine capability reason. Greedy decoding
    # of the 135M default loops inside free-text string values (the joke's "setup"/"punchline", a customer name)
    # until the output budget ends; the cut call then goes to `invalid_tool_calls` (never an exception), so the
    # structured output is None. The grammar still forces the call and its keys; the values are the model's.
    LOOPING_VALUES = "the default checkpoint's greedy decoding loops inside free-text string values until the " \
                     "output budget ends (see MODEL_CARD.md, known limitations)"

    @pytest.mark.xfail(reason=LOOPING_VALUES)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model, schema_type) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=LOOPING_VALUES)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model, schema_type) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=LOOPING_VALUES)
    def test_structured_output_pydantic_2_v1(self, model) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=LOOPING_VALUES)
    def test_structured_output_optional_param(self, model) -> None:
        super().test_structured_output_optional_param(model)

    @pytest.mark.xfail(reason=LOOPING_VALUES)
    def test_unicode_tool_call_integration(self, model, *, tool_choice=None, force_tool_call=True) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)
