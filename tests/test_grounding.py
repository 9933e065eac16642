"""Argument grounding (`toolformer_router.grounding`) and the router's vetoes on a call list's support
(`min_argument_grounding`, `min_request_coverage`, `min_tool_relevance`)."""

import pytest
import torch

from conftest import EMAIL, WEATHER, finishing_sampler
from toolformer_router.grounding import ConversationText, argument_grounding, drop_unstated_optionals, schema_constants
from toolformer_router.lexical import LexicalMatcher
from toolformer_router.relevance import ToolRelevance


@pytest.mark.parametrize("value, stated", [
    ("Lisbon", True),
    ("lisbon", True),  # case does not matter
    ("New York, NY", True),  # the words in order, punctuation aside
    ("coronavirus", True),  # the same letters without a space
    ("San Francisco weather", True),  # two of three words
    ("Berlin", False),
    (5, True),
    (5.0, True),
    (12, True),  # "a dozen"
    (0.15, True),  # "15 %"
    (0.07, True),  # "7%" (0.07 x 100 is 7.000000000000001 in floating point)
    (1000, True),  # "1,000"
    (9, False),
    ("", True),  # nothing to check
    ("NYC", False),  # "New York, NY and": no word after "ny" starts with "c"
    ("NYNY", True),  # a code of capitals: prefixes of words in a row ("New York, NY")
    ("SF", True),  # "San Francisco"
    ("USD", False),  # "1,000 dollars": the words must follow each other
    ("DOL", True),  # a prefix of one word
    ("sf", False),  # only capitals make a code
    ("SANFRANCISCOX", False),  # longer than 5: not a code
])
def test_conversation_states(value, stated):
    text = ConversationText(["Weather in New York, NY and in San Francisco? Also corona virus news",
                             "Buy 5 apples, a dozen eggs, tip 15 % on 1,000 dollars, 7% tax, Lisbon"])
    assert text.states(value) is stated


def test_argument_grounding_counts_only_values_the_user_had_to_give():
    schema = {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "default": 3}, "detailed": {"type": "boolean"},
        "extra": {"type": "object", "properties": {"lang": {"type": "string", "const": "en"}}}}}
    assert {'"celsius"', '"fahrenheit"', "3", '"en"'} <= schema_constants(schema)
    text = ConversationText(["What's the weather in Paris for 4 days?"])

    def grounding(**arguments):
        return argument_grounding([{"name": "weather", "arguments": arguments}], {"weather": schema}, text)

    assert grounding(city="Paris", unit="fahrenheit", days=3, detailed=True, extra={"lang": "en"}) == 1.0
    assert grounding(city="Paris", days=4) == 1.0
    assert grounding(city="Rome", days=4) == 0.5
    assert grounding(city="Rome", days=7) == 0.0
    assert grounding(unit="celsius", detailed=False, extra={"lang": "en"}) is None  # nothing checkable
    assert grounding() is None
    assert grounding(city="[:,") is None  # no letter or digit: nothing to check
    two = [{"name": "weather", "arguments": {"city": "Paris"}}, {"name": "other", "arguments": {"q": ["Oslo", 4]}}]
    assert argument_grounding(two, {"weather": schema}, text) == pytest.approx(2 / 3)  # unknown tool: no constants


@pytest.mark.parametrize("value, mentioned", [
    ("Seattle, WA", True),
    ("seattle", True),
    ("2023-03-12", True),  # "12th" holds the digits 12
    ("2023-03-08", True),  # "2023"
    ("2024-01-01", False),
    ("dontcare", False),
    ("Portland", False),
    (12, True),
    (3, True),  # "march" is no number, but "3 tickets" is
    (30, False),
    ("030", False),
])
def test_conversation_mentions(value, mentioned):
    text = ConversationText(["A music event in Seattle, WA on the 12th of march 2023, 3 tickets"])
    assert text.mentions(value) is mentioned


def test_drop_unstated_optionals_drops_only_optional_values_the_conversation_does_not_mention():
    schema = {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string"}, "date": {"type": "string"}, "genre": {"type": "string", "enum": ["Rock", "Pop"]},
        "limit": {"type": "integer", "default": 10}, "private": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}}}}
    text = ConversationText(["Find music events in New York this weekend, tagged jazz"])
    call = {"name": "find_events", "arguments": {
        "city": "Boston",  # required: kept though unstated
        "date": "2023-01-01",  # optional and made up: dropped
        "genre": "Rock", "limit": 10, "private": True,  # an enum member, a default, a boolean: kept
        "tags": ["blues", "jazz"]}}  # one member mentioned: kept whole
    other = {"name": "unknown_tool", "arguments": {"q": "zzz"}}  # no schema: nothing is required, "zzz" dropped
    kept = drop_unstated_optionals([call, other], {"find_events": schema}, text)
    assert kept == [{"name": "find_events", "arguments": {"city": "Boston", "genre": "Rock", "limit": 10,
                                                          "private": True, "tags": ["blues", "jazz"]}},
                    {"name": "unknown_tool", "arguments": {}}]
    assert call["arguments"]["date"] == "2023-01-01"  # the input is not changed
    stated = {"name": "find_events", "arguments": {"city": "New York", "date": "this weekend", "limit": 5}}
    assert drop_unstated_optionals([stated], {"find_events": schema}, text) == [
        {"name": "find_events", "arguments": {"city": "New York", "date": "this weekend"}}]  # 5: nobody said it


def _grounding_of(router, calls, messages, tools):
    schemas = {tool.name: tool.parameters for tool in router.prepare_tools(tools)}
    return argument_grounding(calls, schemas, ConversationText([messages[0]["content"]]))


def _coverage_of(router, calls, messages, tools):
    called = [tool for tool in router.prepare_tools(tools) if tool.name in {call["name"] for call in calls}]
    return LexicalMatcher().coverage(messages[-1]["content"], called)


def _relevance_of(router, calls, messages, tools):
    called = [tool for tool in router.prepare_tools(tools) if tool.name in {call["name"] for call in calls}]
    return ToolRelevance().score(messages[-1]["content"], called)


@pytest.mark.parametrize("setting, field, measure, floor", [
    ("min_argument_grounding", "argument_grounding", _grounding_of, 0.0),
    ("min_request_coverage", "request_coverage", _coverage_of, 0.0),
    ("min_tool_relevance", "tool_relevance", _relevance_of, -1.0),
])
def test_the_router_answers_instead_of_calling_below_a_veto_threshold(make_router, tokenizer, setting, field,
                                                                       measure, floor):
    """The support of a completed call list (argument grounding, request coverage, tool relevance) is reported;
    below its threshold, "auto" answers in text (the declined list's value and call margin kept), a required
    call is never declined, and with `max_text_tokens` 0 the answer is empty. At the field's floor nothing is
    declined."""
    always_call = torch.zeros(len(tokenizer))
    for token, i in tokenizer.get_vocab().items():
        if tokenizer.convert_tokens_to_string([token]).startswith("["):
            always_call[i] = 1e4

    def route(**kwargs):  # the same seeded samples on every route
        sampler = finishing_sampler(tokenizer, seed=1)
        return router.route(messages, tools=tools, logits_processor=lambda logits: sampler(logits) + always_call,
                            **kwargs)

    router = make_router(seed=7, max_new_tokens=64)
    messages = [{"role": "user", "content": "mail anna@example.com that the weather in Paris is fine"}]
    tools = [EMAIL, WEATHER]
    setattr(router.config, setting, floor)
    free = route()
    assert free.calls and free.finish_reason == "stop", free.raw
    expected = measure(router, [c.model_dump() for c in free.calls], messages, tools)
    assert expected is not None and getattr(free, field) == pytest.approx(expected)
    setattr(router.config, setting, expected)  # not below it: still calls
    assert route().calls
    assert expected < 1.0, "the sampled call has full support; choose another seed"
    setattr(router.config, setting, expected + 1e-3)
    declined = route()
    assert not declined.calls and declined.text is not None and not declined.raw.startswith("[")
    assert getattr(declined, field) == pytest.approx(expected)
    assert declined.call_margin == pytest.approx(free.call_margin)
    required = route(tool_choice="required")
    assert required.calls
    if field == "tool_relevance":  # it could not decline the call: the sentence encoder is not run
        assert required.tool_relevance is None
    silent = route(max_text_tokens=0)
    assert not silent.calls and silent.text == "" and silent.raw == ""
