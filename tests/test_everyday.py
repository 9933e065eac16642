"""`training/everyday.py`: everyday tool schemas, their request templates, the example generator, the tool split
and function masking (pure Python, no model)."""

import random
import re
from collections import Counter

import pytest
from jsonschema import Draft202012Validator

from toolformer_router.schema import normalize_tool
from training.agent_turns import agent_turns
from training.data import Example, call_errors
from training.everyday import (
    EVERYDAY_TEMPLATES,
    EVERYDAY_TOOLS,
    NO_CALL_REQUESTS,
    SOURCE,
    everyday_examples,
    mask_names,
    render_request,
    split_everyday,
)

FORBIDDEN_NAMES = {"get_weather", "convert_currency", "add", "multiply", "send_email", "get_stock_price",
                   "get_order_status", "set_timer", "translate_text", "create_calendar_event"}
FORBIDDEN_JOBS = ("weather", "forecast", "convert currenc", "currency conver", "convert money", "sum of", "add ",
                  "addition", "multipl", "product of", "send an email", "send email", "stock", "share price",
                  "order status", "track an order", "timer", "countdown", "translat", "create an event",
                  "create a calendar", "add an event", "schedule an event")


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return everyday_examples(500, random.Random(0))


@pytest.fixture(scope="module")
def bench_tools(bench_agents) -> dict:
    return bench_agents.TOOLS


def _leaf_schemas(tool: dict) -> dict:
    return tool["parameters"]["properties"]


def test_tool_schemas_are_strict_valid_json_schema_with_descriptions():
    names = [tool["name"] for tool in EVERYDAY_TOOLS]
    assert 35 <= len(names) <= 50 and len(set(names)) == len(names)
    assert set(EVERYDAY_TEMPLATES) == set(names)
    for tool in EVERYDAY_TOOLS:
        Draft202012Validator.check_schema(tool["parameters"])
        normalized = normalize_tool(tool).to_openai()["function"]
        assert normalized == tool, f"{tool['name']} is not in the strict unified form"
        assert tool["description"].strip() and tool["parameters"]["additionalProperties"] is False
        for key, schema in _leaf_schemas(tool).items():
            assert schema.get("description", "").strip(), f"{tool['name']}.{key} has no description"
            assert schema.get("type") in {"string", "number", "integer", "boolean", "array"}
    styles = Counter("camel" if re.search(r"[a-z][A-Z]", n) else "snake" if "_" in n else "word" for n in names)
    assert styles["camel"] >= 3 and styles["snake"] >= 20 and styles["word"] >= 1


def test_no_benchmark_tool_name_or_job(bench_tools):
    names = {tool["name"] for tool in EVERYDAY_TOOLS}
    assert set(bench_tools) == FORBIDDEN_NAMES  # the list here is the benchmark's, so the checks below cover it
    assert not names & FORBIDDEN_NAMES
    for tool in EVERYDAY_TOOLS:
        text = f"{tool['name'].replace('_', ' ')} {tool['description']}".lower()
        found = [job for job in FORBIDDEN_JOBS if job in text]
        assert not found, f"{tool['name']} looks like a benchmark tool's job: {found}"


@pytest.mark.parametrize("name", sorted(EVERYDAY_TEMPLATES))
def test_every_template_gives_a_valid_call_of_stated_arguments(name):
    tool = next(tool for tool in EVERYDAY_TOOLS if tool["name"] == name)
    templates = EVERYDAY_TEMPLATES[name]
    assert 4 <= len(templates) <= 8 and len({text for text, _ in templates}) == len(templates)
    rng = random.Random(name)
    for index, (template, gold) in enumerate(templates):
        used = {value for value in gold.values() if isinstance(value, str) and re.fullmatch(r"\{[^{}]+\}", value)}
        assert used == {f"{{{field}}}" for field in re.findall(r"\{([^{}]+)\}", template)}, template
        assert set(gold) <= set(_leaf_schemas(tool))
        for _ in range(10):
            text, call, source = render_request(name, rng, index)
            assert source == template and "{" not in text and call.name == name
            example = Example(id="t", source=SOURCE, tools=[tool], messages=[{"role": "user", "content": text}],
                              calls=[call])
            assert not call_errors(example), (text, call.arguments)
            assert set(call.arguments) == set(gold)
            for key, value in call.arguments.items():  # JSON numbers of the schema's own type
                declared = _leaf_schemas(tool)[key]["type"]
                if declared == "integer":
                    assert type(value) is int, (key, value)
                elif declared == "number":
                    assert type(value) in (int, float), (key, value)
                elif declared == "boolean":
                    assert type(value) is bool
                if value == gold[key] and declared == "string" and "enum" not in _leaf_schemas(tool)[key]:
                    # a literal string (not an enum code) is said in the request
                    assert value.lower() in text.lower()


def test_generated_examples_are_valid_and_mixed(examples):
    assert len(examples) == 500 and len({e.id for e in examples}) == 500
    kinds = Counter("none" if not e.calls else "single" if len(e.calls) == 1 else "double" for e in examples)
    assert 0.62 <= kinds["single"] / 500 <= 0.78
    assert 0.09 <= kinds["double"] / 500 <= 0.21 and 0.09 <= kinds["none"] / 500 <= 0.21
    for example in examples:
        names = [tool["name"] for tool in example.tools]
        assert example.source == SOURCE and 5 <= len(names) <= 12 and len(set(names)) == len(names)
        assert not call_errors(example)
        assert len({call.name for call in example.calls}) == len(example.calls)
        assert example.target_text() or not example.calls
        if not example.calls:
            assert example.messages[0]["content"] in NO_CALL_REQUESTS
    assert len({len(e.tools) for e in examples}) == 8  # every count from 5 to 12 occurs
    assert len({call.name for e in examples for call in e.calls}) == len(EVERYDAY_TOOLS)


def test_generation_is_deterministic_for_a_seed(examples):
    again = everyday_examples(500, random.Random(0))
    assert [e.model_dump() for e in again] == [e.model_dump() for e in examples]
    other = everyday_examples(500, random.Random(1))
    assert [e.model_dump() for e in other] != [e.model_dump() for e in examples]


def test_split_is_tool_disjoint_and_covers_every_tool():
    train, validation = split_everyday(0.2, random.Random(0))
    train_names, validation_names = {t["name"] for t in train}, {t["name"] for t in validation}
    assert not train_names & validation_names
    assert train_names | validation_names == {t["name"] for t in EVERYDAY_TOOLS}
    assert len(validation) == round(0.2 * len(EVERYDAY_TOOLS))
    assert split_everyday(0.2, random.Random(0)) == (train, validation)
    for example in everyday_examples(200, random.Random(2), tools=validation):
        assert {tool["name"] for tool in example.tools} <= validation_names
        assert 5 <= len(example.tools) <= min(12, len(validation))
    with pytest.raises(ValueError, match="not everyday tools"):
        everyday_examples(1, random.Random(0), tools=[*train, {"name": "other", "description": "",
                                                              "parameters": {"type": "object", "properties": {}}}])


def _property_names(schema: dict) -> set[str]:
    """Every property name in a schema, at every depth."""
    names = set(schema.get("properties", {}))
    for sub in schema.get("properties", {}).values():
        names |= _property_names(sub)
    if isinstance(schema.get("items"), dict):
        names |= _property_names(schema["items"])
    return names


def _leaves(value) -> list:
    """The scalars of a JSON value in order, keys left out."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _assert_masked(original: Example, masked: Example) -> None:
    Example.model_validate(masked.model_dump())
    assert not call_errors(masked)
    old_names = {tool["name"] for tool in original.tools}
    for before, after in zip(original.tools, masked.tools, strict=True):
        assert re.fullmatch(r"f_[a-z0-9]{4}", after["name"]) and after["name"] not in old_names
        assert after["description"] == before["description"]
        old_params, new_params = _property_names(before["parameters"]), _property_names(after["parameters"])
        assert len(new_params) == len(old_params) and not new_params & old_params
        assert all(re.fullmatch(r"p_[a-z0-9]{2}", p) for p in new_params)
        assert set(after["parameters"].get("required", [])) <= set(after["parameters"]["properties"])
        assert len(after["parameters"].get("required", [])) == len(before["parameters"].get("required", []))
        enums = [s.get("enum") for s in before["parameters"]["properties"].values()]
        assert [s.get("enum") for s in after["parameters"]["properties"].values()] == enums
        descriptions = [s.get("description") for s in before["parameters"]["properties"].values()]
        assert [s.get("description") for s in after["parameters"]["properties"].values()] == descriptions
    assert len(masked.calls) == len(original.calls)
    for before, after in zip(original.calls, masked.calls, strict=True):
        assert _leaves(after.arguments) == _leaves(before.arguments)  # values kept, keys renamed
    assert [m["content"] for m in masked.messages] == [m["content"] for m in original.messages]
    assert (masked.target_text() == "") == (not masked.calls)


def test_mask_names_hides_every_name_and_keeps_the_example_valid(examples):
    rng = random.Random(3)
    for example in examples:
        masked = mask_names(example, rng)
        _assert_masked(example, masked)
        target = masked.target_text()
        assert not any(f'"{tool["name"]}"' in target for tool in example.tools)


def test_mask_names_renames_calls_and_results_of_agent_turns(examples):
    rng = random.Random(4)
    for turn in agent_turns(examples, 100, random.Random(5)):
        masked = mask_names(turn, rng)
        _assert_masked(turn, masked)
        tools = {tool["name"]: tool for tool in masked.tools}
        for message in masked.messages:
            for call in message.get("tool_calls", []):
                assert call["name"] in tools
                assert set(call["arguments"]) <= set(tools[call["name"]]["parameters"]["properties"])
            if message["role"] == "tool":
                assert message["name"] in tools


def test_mask_names_follows_nested_objects_and_arrays():
    item = {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            "required": ["sku"]}
    tool = {"name": "basket", "description": "Fill a basket.", "parameters": {
        "type": "object", "properties": {"items": {"type": "array", "items": item},
                                         "note": {"type": "object", "properties": {"text": {"type": "string"}}}},
        "required": ["items"]}}
    example = Example(id="n", source="test", tools=[normalize_tool(tool).to_openai()["function"]],
                      messages=[{"role": "user", "content": "two apples"}],
                      calls=[{"name": "basket", "arguments": {"items": [{"sku": "apple", "qty": 2}],
                                                              "note": {"text": "ripe"}}}])
    masked = mask_names(example, random.Random(0))
    _assert_masked(example, masked)
    params = masked.tools[0]["parameters"]
    (items_key,) = params["required"]
    inner = params["properties"][items_key]["items"]
    (argument,) = masked.calls[0].arguments[items_key]
    assert set(argument) == set(inner["properties"]) and set(inner["required"]) <= set(argument)
