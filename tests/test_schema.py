import copy
import re

import pytest

from conftest import EMAIL, STOCK, WEATHER
from toolformer_router import DuplicateToolError, InvalidToolError, SchemaTooLongError, UnknownToolError, normalize_tool
from toolformer_router.schema import fit_tool_text, normalize_tools, render_tool, shortened_texts


def test_accepts_openai_bare_and_mcp_shapes_with_the_same_result():
    openai = normalize_tool(WEATHER)
    bare = normalize_tool(WEATHER["function"])
    mcp = normalize_tool({"name": "get_weather", "description": "Current weather for a city.",
                          "inputSchema": WEATHER["function"]["parameters"]})
    assert openai == bare == mcp
    assert openai.schema_hash == bare.schema_hash == mcp.schema_hash
    assert openai.parameters["additionalProperties"] is False


def test_bfcl_types_become_json_schema():
    tool = normalize_tool(STOCK)
    assert tool.parameters["type"] == "object"
    assert tool.parameters["properties"]["threshold"]["type"] == "number"
    nested = normalize_tool({"name": "f", "parameters": {"type": "dict", "properties": {
        "pair": {"type": "tuple", "items": {"type": "float"}},
        "anything": {"type": "any", "description": "free"},
        "opts": {"type": "dict", "properties": {"flag": {"type": "boolean"}}, "required": ["flag", "ghost"]},
    }, "required": ["pair", "missing"]}})
    props = nested.parameters["properties"]
    assert props["pair"] == {"type": "array", "items": {"type": "number"}}
    assert props["anything"] == {"description": "free"}  # `any` accepts every value
    assert props["opts"]["required"] == ["flag"] and props["opts"]["additionalProperties"] is False
    assert nested.parameters["required"] == ["pair"]  # undeclared names dropped


def test_normalisation_is_idempotent():
    for raw in (WEATHER, EMAIL, STOCK):
        once = normalize_tool(raw)
        twice = normalize_tool(once.to_openai())
        assert twice == once and twice.schema_hash == once.schema_hash


def test_hash_ignores_key_order_but_not_content():
    shuffled = {"parameters": WEATHER["function"]["parameters"], "description": "Current weather for a city.",
                "name": "get_weather"}
    assert normalize_tool(shuffled).schema_hash == normalize_tool(WEATHER).schema_hash
    changed = copy.deepcopy(WEATHER)
    changed["function"]["description"] = "Weather now."
    assert normalize_tool(changed).schema_hash != normalize_tool(WEATHER).schema_hash


@pytest.mark.parametrize(
    "tool, message",
    [
        ({"description": "no name"}, "name"),
        ({"name": "  "}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "parameters": "not a schema"}, "parameters"),
        ({"name": "x", "parameters": {"type": "string"}}, "type 'object'"),
        ({"name": "x", "parameters": {"type": "object", "properties": {"a": {"type": "strng"}}}}, "unknown type"),
        ({"name": "x", "parameters": {"type": "object", "properties": {"a": {"minimum": "low"}}}}, "invalid JSON Schema"),
        ({"name": "x", "description": 3}, "description"),
        ("get_weather", "dict"),
    ],
)
def test_invalid_tools_raise_a_clear_error(tool, message):
    with pytest.raises(InvalidToolError, match=message):
        normalize_tool(tool)


def test_duplicate_names_raise():
    with pytest.raises(DuplicateToolError, match="send_email"):
        normalize_tools([EMAIL, EMAIL])


def test_truncation_shortens_descriptions_first_and_keeps_structure():
    long = "word " * 400
    tool = normalize_tool({"name": "f", "description": long, "parameters": {"type": "object", "properties": {
        "a": {"type": "string", "description": "short", "enum": ["x", "y"]}}}})
    budget = 12  # "tokens" of a stand-in tokenizer: one per 20 characters
    assert len(render_tool(tool)) // 20 > budget
    text = fit_tool_text(tool, lambda texts: [len(s) // 20 for s in texts], budget)
    assert len(text) // 20 <= budget
    assert '"enum":["x","y"]' in text and '"name":"f"' in text
    assert len(text) < len(render_tool(tool))


def test_schema_that_cannot_fit_raises_schema_too_long():
    properties = {f"parameter_{i}": {"type": "string"} for i in range(50)}
    tool = normalize_tool({"name": "big", "description": "d" * 50, "parameters": {"type": "object",
                                                                                  "properties": properties}})
    with pytest.raises(SchemaTooLongError, match="big"):
        fit_tool_text(tool, lambda texts: [len(s) for s in texts], 100)


def test_fit_returns_the_first_shortening_that_fits_across_counting_chunks():
    properties = {f"p{i}": {"type": "string", "description": f"parameter {i} " + "detail " * 30} for i in range(10)}
    tool = normalize_tool({"name": "many", "description": "tool " * 80, "parameters": {
        "type": "object", "properties": properties}})
    states = list(shortened_texts(tool))
    assert len(states) > 48 and states[0] == render_tool(tool)
    assert all(len(a) > len(b) for a, b in zip(states, states[1:]))  # every step shortens
    assert '"description"' not in states[-1].replace('"description":""', "")  # the last has none left
    calls = []

    def counts(texts):
        calls.append(len(texts))
        return [len(s) // 10 for s in texts]

    budget = len(states[37]) // 10  # first fits at step 37 or just before it: beyond two chunks of 16
    first = next(i for i, s in enumerate(states) if len(s) // 10 <= budget)
    assert first > 32
    assert fit_tool_text(tool, counts, budget) == states[first]
    assert calls == [16, 16, 16]  # counted a chunk at a time, no further than needed


_NODE_REQUIRED = {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}, "required": ["child"]}


@pytest.mark.parametrize("parameters, cycle", [
    ({"type": "object", "properties": {"n": {"$ref": "#/$defs/node"}}, "$defs": {"node": _NODE_REQUIRED}},
     "node -> node"),
    ({"type": "object", "properties": {"n": {"$ref": "#/$defs/a"}}, "required": ["n"], "$defs": {
        "a": {"type": "object", "properties": {"b": {"$ref": "#/$defs/b"}}, "required": ["b"]},
        "b": {"type": "object", "properties": {"items": {"type": "array", "minItems": 1,
                                                         "items": {"$ref": "#/$defs/a"}}}, "required": ["items"]}}},
     "a -> b -> a"),
    ({"type": "object", "properties": {}, "$defs": {"a": {"$ref": "#/$defs/a"}}}, "a -> a"),
    ({"type": "object", "properties": {"again": {"$ref": "#"}}, "required": ["again"]}, "# -> #"),
])
def test_a_recursive_ref_no_finite_value_satisfies_is_refused(parameters, cycle):
    with pytest.raises(InvalidToolError, match=re.escape(f"({cycle})")):
        normalize_tool({"name": "t", "parameters": parameters})


@pytest.mark.parametrize("node", [
    {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}},  # optional
    {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
     "required": ["children"]},  # a list that may be empty
    {"anyOf": [{"type": "null"}, _NODE_REQUIRED]},  # a branch that ends
])
def test_a_recursive_ref_that_can_end_routes_to_a_valid_call(make_router, node):
    tool = {"name": "tree", "parameters": {"type": "object", "properties": {"root": {"$ref": "#/$defs/node"}},
                                           "required": ["root"], "$defs": {"node": node}}}
    router = make_router()
    result = router.route("make a tree", tools=[tool], tool_choice="required", max_new_tokens=64)
    assert result.calls or result.finish_reason == "length"  # valid, or cut by the budget: never a grammar error


@pytest.mark.parametrize("bad", [{"minimum": float("nan")}, {"enum": [1, float("inf")]}, {"default": -float("inf")}])
def test_non_finite_numbers_in_a_schema_are_refused(bad):
    with pytest.raises(InvalidToolError, match="not a JSON number"):
        normalize_tool({"name": "t", "parameters": {"type": "object", "properties": {"x": {"type": "number", **bad}}}})


def test_an_oversized_schema_is_refused_before_any_work_that_grows_with_it(monkeypatch):
    import toolformer_router.schema as schema

    def never(*args, **kwargs):
        raise AssertionError("the schema was walked before its size was checked")

    monkeypatch.setattr(schema, "_normalize_schema", never)
    properties = {f"p{i}": {"type": "string", "description": "x" * 40} for i in range(5000)}
    with pytest.raises(InvalidToolError, match="bytes, more than"):
        normalize_tool({"name": "big", "parameters": {"type": "object", "properties": properties}})


HUGE = "x" * 100_000


@pytest.mark.parametrize("parameters", [
    {"type": "object", "properties": {"a": {"type": HUGE}}},
    {"type": "object", "properties": {"a": {"type": [HUGE]}}},
    {"type": "object", "properties": {"a": {"type": {"nested": HUGE}}}},
])
def test_error_messages_quote_at_most_a_bounded_part_of_the_input(parameters):
    """A client's 100 kB value is not copied into the error (which servers log and answer with)."""
    with pytest.raises(InvalidToolError) as error:
        normalize_tool({"name": "t", "parameters": parameters})
    assert len(str(error.value)) < 300


def test_an_unknown_tool_choice_is_named_in_a_bounded_message(make_router):
    router = make_router()
    for choice in ({"type": "function", "function": {"name": HUGE}}, {"type": HUGE}):
        with pytest.raises(UnknownToolError) as error:
            router.route("hi", tools=[WEATHER], tool_choice=choice, max_new_tokens=4)
        assert len(str(error.value)) < 300
