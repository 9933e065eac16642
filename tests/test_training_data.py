"""Training data pipeline: BFCL loaders, split policy (no test-side leakage), distractors, prepare, synthetic."""

from __future__ import annotations

import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from toolformer_router import normalize_tool
from toolformer_router.training.data import (
    COMPOSED_SOURCES,
    FOREIGN_NO_CALL_SOURCE,
    NO_CALL_SOURCE,
    TEST_CATEGORIES,
    TRAIN_CATEGORIES,
    DataError,
    Example,
    GoldCall,
    bfcl_functions,
    call_errors,
    compose_multi_call,
    gold_arguments,
    load_bfcl,
    load_jsonl,
    load_prepared,
    make_foreign_no_call,
    make_no_call,
    pad_with_distractors,
    prepare,
    schema_hash,
    split_by_tool,
    tool_dict,
)
from toolformer_router.messages import executed_calls, normalize_messages
from toolformer_router.training.agent_turns import KINDS, agent_turn, agent_turns
from toolformer_router.training.evaluate import active_tools
from toolformer_router.training.synthetic import synthesize, synthesize_parallel

FILES = ("train.jsonl", "validation.jsonl", "validation_multi.jsonl", "validation_parallel.jsonl", "validation_agent.jsonl", "test.jsonl", "catalog_train.jsonl", "catalog_test.jsonl", "counts.json")


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def bfcl() -> None:
    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("bfcl-eval is not installed (pip install --no-deps bfcl-eval)")


@pytest.fixture(scope="module")
def prepared(bfcl, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("prepared")
    return out, prepare(out, seed=0)


@pytest.fixture(scope="module")
def test_side() -> tuple[set[str], set[str]]:
    """Names and schema hashes of every function doc of the test categories, read from the raw files."""
    raw = [f for category in TEST_CATEGORIES for f in bfcl_functions(category)]
    return {f["name"] for f in raw}, {schema_hash(tool_dict(f)) for f in raw}


WEATHER = tool_dict({
    "name": "get_weather", "description": "Gets the current weather for a city.",
    "parameters": {"type": "dict", "required": ["city"], "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "threshold": {"type": "float"},
        "alerts": {"type": "dict", "properties": {"kind": {"type": "string", "enum": ["rain", "wind"]},
                                                   "level": {"type": "integer"}}, "required": ["kind"]},
        "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23},
                  "minItems": 1, "maxItems": 4},
        "detailed": {"type": "boolean"},
    }},
})


def test_loaders_give_valid_examples_per_category(bfcl):
    stats: Counter[str] = Counter()
    for category in TRAIN_CATEGORIES + TEST_CATEGORIES:
        examples = load_bfcl(category, stats)
        assert examples, category
        assert len({e.id for e in examples}) == len(examples)
        invalid = 0
        for example in examples:
            assert example.source == f"bfcl:{category}" and example.messages
            if category.endswith("irrelevance"):
                assert example.calls == [] and example.target_text() == ""
                continue
            assert example.calls and all(c.allowed is not None for c in example.calls)
            invalid += bool(call_errors(example))
            rendered = json.loads(example.target_text())  # arguments in each schema's property order
            tools = {t["name"]: t for t in example.tools}
            for call, out in zip(example.calls, rendered):
                assert out == {"name": call.name, "arguments": call.arguments}
                order = [k for k in tools[call.name]["parameters"]["properties"] if k in call.arguments]
                assert list(out["arguments"]) == order
        if category in TRAIN_CATEGORIES:
            assert invalid == 0, category
        else:  # kept to keep the benchmark whole, and counted
            assert invalid == stats[f"test_gold_invalid/{category}"], category


def test_gold_arguments_coerce_bfcl_values():
    tool = normalize_tool(WEATHER)
    allowed = {"city": ["", "Paris"], "unit": [None], "days": [3.0, 3], "threshold": [2], "missing": ["", 1],
               "alerts": [{"kind": ["wind"], "level": ["", 2]}], "hours": [[5.0, 6]], "detailed": [""]}
    arguments = gold_arguments(allowed, tool)
    assert arguments == {"city": "Paris", "days": 3, "threshold": 2, "alerts": {"kind": "wind", "level": 2},
                         "hours": [5, 6]}
    assert type(arguments["days"]) is int and type(arguments["threshold"]) is int
    bad = Example(id="x", source="bfcl:test", tools=[WEATHER], messages=[{"role": "user", "content": "hi"}],
                  calls=[GoldCall(name="get_weather",
                                  arguments=gold_arguments({"city": ["Oslo"], "unit": ["kelvin"]}, tool))])
    assert call_errors(bad)  # an invalid concrete value is kept so that the example is dropped, not repaired


def test_no_test_side_leakage(prepared, test_side):
    out, _ = prepared
    test_names, test_hashes = test_side
    test_ids = {e["id"] for e in read_jsonl(out / "test.jsonl")}
    train_side = read_jsonl(out / "train.jsonl") + read_jsonl(out / "validation.jsonl")
    assert test_ids and train_side
    for example in train_side:
        assert example["id"].removesuffix(f":{NO_CALL_SOURCE}").removesuffix(f":{FOREIGN_NO_CALL_SOURCE}") \
            not in test_ids
        assert example["source"] in ({f"bfcl:{c}" for c in TRAIN_CATEGORIES}
                                     | {NO_CALL_SOURCE, FOREIGN_NO_CALL_SOURCE, "synthetic"})
        for tool in example["tools"]:  # own tools and distractors alike
            assert tool["name"] not in test_names and schema_hash(tool) not in test_hashes
    catalog = read_jsonl(out / "catalog_train.jsonl")  # the auto-encoding stage's and the distractors' pool
    assert catalog
    for entry in catalog:
        assert entry["name"] not in test_names and entry["schema_hash"] not in test_hashes
        assert schema_hash(entry) == entry["schema_hash"]
    assert {e["schema_hash"] for e in read_jsonl(out / "catalog_test.jsonl")} == test_hashes


def test_distractor_padding_and_no_call(prepared):
    out, _ = prepared
    catalog = [{k: e[k] for k in ("name", "description", "parameters")}
               for e in read_jsonl(out / "catalog_train.jsonl")]
    examples = [e for e in load_bfcl("live_multiple") if len(e.calls) == 1][:30]
    for example in examples:
        padded = pad_with_distractors(example, catalog, 20, random.Random(1))
        names = [t["name"] for t in padded.tools]
        assert len(names) == 20 == len(set(names))
        assert all(t in padded.tools for t in example.tools) and padded.calls == example.calls
        assert padded == pad_with_distractors(example, catalog, 20, random.Random(1))
        no_call = make_no_call(example, catalog, 20, random.Random(2))
        gold = {c.name for c in example.calls}
        assert no_call.calls == [] and no_call.source == NO_CALL_SOURCE and len(no_call.tools) == 20
        assert gold.isdisjoint(t["name"] for t in no_call.tools)
    train = read_jsonl(out / "train.jsonl")
    by_id = {e["id"]: e for e in train}
    for example in train:
        names = [t["name"] for t in example["tools"]]
        assert len(names) == len(set(names)) and len(names) >= 20
        if example["source"] == NO_CALL_SOURCE:
            origin = by_id[example["id"].removesuffix(f":{NO_CALL_SOURCE}")]
            assert example["calls"] == [] and len(origin["calls"]) == 1
            assert origin["calls"][0]["name"] not in names
            assert example["absent_tools"] == [origin["calls"][0]["name"]]
    validation = {e.id: e for e in load_prepared(out, "validation")}
    removed = [e for e in validation.values() if e.source == NO_CALL_SOURCE]
    assert removed and len(removed) == sum(bool(e.calls) for e in validation.values())
    for example in removed:  # the origin's own tools minus its gold ones; evaluation never adds those back
        origin = validation[example.id.removesuffix(f":{NO_CALL_SOURCE}")]
        assert example.absent_tools == sorted({c.name for c in origin.calls})
        assert sorted(t["name"] for t in example.tools) == sorted(
            t["name"] for t in origin.tools if t["name"] not in example.absent_tools)
        for count in (20, 200):
            active = active_tools(example, count, catalog, seed=0)
            assert len(active) == count and set(example.absent_tools).isdisjoint(t["name"] for t in active)


def test_foreign_no_call_is_a_request_beside_another_tasks_tool(prepared):
    out, _ = prepared
    catalog = [{k: e[k] for k in ("name", "description", "parameters")}
               for e in read_jsonl(out / "catalog_train.jsonl")]
    validation = {e.id: e for e in load_prepared(out, "validation")}
    with_calls = [e for e in validation.values() if e.calls]
    foreign = [e for e in validation.values() if e.source == FOREIGN_NO_CALL_SOURCE]
    assert len(foreign) == len(with_calls) > 0
    donor_tools = {t["name"] for e in with_calls for t in e.tools if t["name"] in {c.name for c in e.calls}}
    for example in foreign:
        origin = validation[example.id.removesuffix(f":{FOREIGN_NO_CALL_SOURCE}")]
        own = {t["name"] for t in origin.tools}
        assert example.calls == [] and example.messages == origin.messages
        assert example.absent_tools == sorted(own) and len(example.tools) == 1
        (tool,) = example.tools
        assert tool["name"] not in own and tool["name"] in donor_tools
        active = active_tools(example, 20, catalog, seed=0)  # evaluation never brings the request's tools back
        assert len(active) == 20 and own.isdisjoint(t["name"] for t in active)
    lone = with_calls[0]
    only_own = [e for e in with_calls if {t["name"] for t in e.tools} <= {t["name"] for t in lone.tools}]
    with pytest.raises(ValueError, match="no donor has a gold tool"):
        make_foreign_no_call(lone, only_own, random.Random(0))


def test_prepare_is_deterministic_and_counts_match_files(prepared, tmp_path):
    out, counts = prepared
    assert orjson.loads((out / "counts.json").read_bytes()) == counts
    for split in ("train", "validation", "validation_multi", "validation_parallel", "test"):
        rows = read_jsonl(out / f"{split}.jsonl")
        assert len(rows) == counts[split] > 0
        assert Counter(r["source"] for r in rows) == {k.split("/", 1)[1]: v for k, v in counts.items()
                                                     if k.startswith(f"{split}/")}
    assert len(read_jsonl(out / "catalog_train.jsonl")) == counts["catalog_train"]
    assert len(read_jsonl(out / "catalog_test.jsonl")) == counts["catalog_test"]
    assert all(len(e["tools"]) <= 4 for e in read_jsonl(out / "test.jsonl"))  # own functions only
    irrelevance = load_prepared(out, "irrelevance")
    assert len(irrelevance) == counts["irrelevance"] > 0 and all(not e.calls for e in irrelevance)
    assert counts["validation/bfcl:live_simple"] == round(0.1 * (counts["train/bfcl:live_simple"]
                                                                 + counts["validation/bfcl:live_simple"]))
    assert counts["train/no_call"] > 0 and any(k.startswith("dropped/") for k in counts)
    assert prepare(tmp_path, seed=0) == counts
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_synthetic_calls_validate_on_training_catalog(prepared):
    out, _ = prepared
    catalog = read_jsonl(out / "catalog_train.jsonl")
    examples = synthesize(catalog, 1, random.Random(0))
    assert len(examples) >= 0.99 * len(catalog)
    for example in examples:
        assert example.source == "synthetic" and example.messages[0]["role"] == "user"
        ((tool,), (call,)) = example.tools, example.calls
        Draft202012Validator(tool["parameters"]).validate(call.arguments)


def test_synthetic_honours_enums_bounds_and_required():
    examples = synthesize([WEATHER], 60, random.Random(3))
    assert len(examples) == 60
    assert examples == synthesize([WEATHER], 60, random.Random(3))
    seen_optional = Counter()
    for example in examples:
        arguments = example.calls[0].arguments
        assert "city" in arguments and arguments["city"] in example.messages[0]["content"]
        assert arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
        assert 1 <= arguments.get("days", 1) <= 7
        if "alerts" in arguments:
            assert arguments["alerts"]["kind"] in ("rain", "wind")
        assert 1 <= len(arguments.get("hours", [0])) <= 4 and all(0 <= h <= 23 for h in arguments.get("hours", []))
        seen_optional.update(arguments.keys())
    assert 0 < seen_optional["unit"] < 60 and 0 < seen_optional["alerts"] < 60
    assert len({e.messages[0]["content"].split()[0] for e in examples}) > 3  # varied phrasings


def test_synthetic_parallel_examples_ask_for_several_valid_calls(prepared):
    out, _ = prepared
    catalog = read_jsonl(out / "catalog_train.jsonl")
    examples = synthesize_parallel(catalog, 60, random.Random(1))
    assert len(examples) >= 48 and examples == synthesize_parallel(catalog, 60, random.Random(1))
    same = [e for e in examples if len({c.name for c in e.calls}) == 1]
    assert 0.3 * len(examples) <= len(same) <= 0.7 * len(examples)  # parallel and parallel_multiple
    assert {len(e.calls) for e in examples} == {2, 3, 4}
    assert any("for each of these" in e.messages[0]["content"] or "several times" in e.messages[0]["content"]
               or e.messages[0]["content"].startswith("Can you") and ";" in e.messages[0]["content"] for e in same)
    for example in examples:
        assert example.source == "synthetic_parallel" and 2 <= len(example.calls) <= 4
        assert not call_errors(example)  # every call validates against its own tool
        arguments = [orjson.dumps(c.arguments, option=orjson.OPT_SORT_KEYS) for c in example.calls]
        assert len(set(arguments)) == len(arguments)
        names = [c.name for c in example.calls]
        if example in same:
            assert len(example.tools) == 1
        else:
            assert [t["name"] for t in example.tools] == names and len(set(names)) == len(names)


def test_synthetic_parallel_never_mixes_two_schemas_of_one_name():
    seats = {"type": "object", "required": ["seats"], "properties": {"seats": {"type": "integer"}}}
    catalog = [
        {"name": "book_table", "description": "Book a table.", "parameters": seats},
        {"name": "book_table", "description": "Book a table.", "parameters": {
            **seats, "properties": {"seats": {"type": "integer", "enum": [1, 2, 3]}}}},
        *({"name": f"tool_{i}", "description": f"Tool number {i}.", "parameters": seats} for i in range(4)),
    ]
    examples = synthesize_parallel(catalog, 200, random.Random(3))
    assert len(examples) > 100
    for example in examples:
        assert not call_errors(example), (example.id, call_errors(example))


def test_validation_parallel_lists_calls_to_validation_tools_only(prepared):
    out, counts = prepared
    validation = load_prepared(out, "validation")
    gold_names = {call.name for example in validation for call in example.calls}
    lists = load_prepared(out, "validation_parallel")  # loading validates every gold call against the tools
    assert len(lists) == counts["validation_parallel"] >= 80
    assert all(2 <= len(e.calls) <= 4 and {c.name for c in e.calls} <= gold_names for e in lists)
    assert all({t["name"] for t in e.tools} == {c.name for c in e.calls} for e in lists)  # eval adds distractors
    same_tool = [e for e in lists if len({c.name for c in e.calls}) == 1]
    assert 0.3 < len(same_tool) / len(lists) < 0.7
    assert len({e.id for e in lists}) == len(lists) and all(e.id.startswith("validation_") for e in lists)


def test_composed_validation_asks_for_both_calls_of_two_validation_examples(prepared):
    out, counts = prepared
    validation = {e.id: e for e in load_prepared(out, "validation")}
    composed = load_prepared(out, "validation_multi")  # loading validates every gold call against the tools
    assert len(composed) == counts["validation_multi"] >= 50
    assert {e.source for e in composed} == set(COMPOSED_SOURCES)
    used = Counter()
    for example in composed:
        first, second = (validation[part] for part in example.id.split("+"))
        used.update([(example.source, first.id), (example.source, second.id)])
        assert example.calls == [*first.calls, *second.calls]
        same_tool = first.calls[0].name == second.calls[0].name
        assert same_tool == (example.source == COMPOSED_SOURCES[0])
        assert first.calls[0].arguments != second.calls[0].arguments
        assert {t["name"] for t in example.tools} == {t["name"] for t in first.tools + second.tools}
        text = example.messages[0]["content"]
        assert text.startswith(first.messages[0]["content"].rstrip()) and " Also, " in text
        assert text.endswith(second.messages[0]["content"][1:])
    assert max(used.values()) == 1  # each validation example at most once per kind
    assert compose_multi_call(list(validation.values()), 10, random.Random(5)) == compose_multi_call(
        list(validation.values()), 10, random.Random(5))


def test_load_jsonl_roundtrip_and_errors_name_the_line(tmp_path):
    good = Example(id="a", source="user", tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Oslo?"}],
                   calls=[GoldCall(name="get_weather", arguments={"city": "Oslo"})])
    path = tmp_path / "data.jsonl"
    path.write_bytes(orjson.dumps(good.model_dump()) + b"\n\n" + orjson.dumps(good.model_dump()) + b"\n")
    assert load_jsonl(path) == [good, good]
    bad_lines = {
        "not json": b"{oops",
        "no user message": orjson.dumps({**good.model_dump(), "messages": [{"role": "system", "content": "x"}]}),
        "invalid gold call": orjson.dumps(
            {**good.model_dump(), "calls": [{"name": "get_weather", "arguments": {"days": 3}}]}),
        "unknown tool": orjson.dumps({**good.model_dump(), "calls": [{"name": "nope", "arguments": {}}]}),
    }
    for reason, line in bad_lines.items():
        path.write_bytes(orjson.dumps(good.model_dump()) + b"\n" + line + b"\n")
        with pytest.raises(DataError, match="line 2"):
            load_jsonl(path)


def test_split_by_tool_keeps_every_validation_tool_out_of_training(bfcl, tmp_path):
    examples = [e for category in TRAIN_CATEGORIES for e in load_bfcl(category)]
    train, validation, held_out = split_by_tool(examples, 0.1, random.Random(0))
    assert held_out and train and validation
    assert not any({t["name"] for t in e.tools} & held_out for e in train)
    assert all({c.name for c in e.calls} & held_out or not e.calls for e in validation)
    with_calls = sum(1 for e in examples if e.calls)
    assert 0.1 * with_calls <= sum(1 for e in validation if e.calls) < 0.2 * with_calls

    counts = prepare(tmp_path, seed=0, validation_split="tool", validation_agent=40, synthetic_per_tool=1,
                     everyday=60, validation_everyday=30)
    everyday = load_prepared(tmp_path, "validation_everyday")
    assert len(everyday) == counts["validation_everyday"] == 30 and any(e.calls for e in everyday)
    validation_names = {c["name"] for row in read_jsonl(tmp_path / "validation.jsonl") for c in row["calls"]}
    assert validation_names and counts["held_out_tools"] >= len(validation_names) > 0
    everyday_schemas = {schema_hash(t) for e in everyday for t in e.tools}  # (a BFCL tool may share a name)
    assert counts["train/everyday"] == 60
    for row in read_jsonl(tmp_path / "train.jsonl"):  # distractors and synthetic examples included
        assert not {t["name"] for t in row["tools"]} & validation_names, row["id"]
        assert not {schema_hash(t) for t in row["tools"]} & everyday_schemas, row["id"]
    assert counts["validation_agent"] == len(load_prepared(tmp_path, "validation_agent")) == 40


def _two_calls() -> Example:
    return Example(id="w", source="bfcl:live_parallel", tools=[WEATHER],
                   messages=[{"role": "user", "content": "Weather in Rome and Oslo?"}],
                   calls=[GoldCall(name="get_weather", arguments={"city": "Rome"}),
                          GoldCall(name="get_weather", arguments={"city": "Oslo"})])


@pytest.mark.parametrize("kind", KINDS)
def test_agent_turns_continue_a_turn_the_way_the_router_reads_it(kind):
    example = _two_calls()
    for seed in range(20):
        turn = agent_turn(example, kind, random.Random(seed))
        messages = normalize_messages(turn.messages)
        ran = executed_calls(messages)  # what the router will treat as already run
        assert messages[0] == {"role": "user", "content": "Weather in Rome and Oslo?"}
        assert [m["role"] for m in messages[1:]] == ["assistant"] + ["tool"] * len(ran)
        assert ran + [c.model_dump(include={"name", "arguments"}) for c in turn.calls] \
            == [c.model_dump(include={"name", "arguments"}) for c in example.calls] or not turn.calls
        results = [m["content"] for m in messages if m["role"] == "tool"]
        errors = [r for r in results if "error" in r.lower() or "exception" in r.lower() or "false" in r]
        if kind == "answered":
            assert turn.calls == [] and len(ran) == 2 and not errors
        elif kind == "remaining":
            assert len(ran) == 1 and [c.arguments for c in turn.calls] == [{"city": "Oslo"}]
        else:
            assert turn.calls == [] and len(ran) == 2 and len(errors) == 1
        assert turn.source == f"agent_{kind}"


def test_agent_turns_draw_unique_examples_and_skip_later_steps():
    one = _two_calls().model_copy(update={"calls": _two_calls().calls[:1], "id": "one"})
    turns = agent_turns([_two_calls(), one, *agent_turns([one], 3, random.Random(1))], 60, random.Random(0))
    assert len(turns) == 60 and len({t.id for t in turns}) == 60
    assert {t.source for t in turns} == {f"agent_{kind}" for kind in KINDS}
    assert all(t.messages[1]["role"] == "assistant" and len(t.messages[1]["tool_calls"]) for t in turns)
    assert all(t.id.startswith(("w:", "one:")) for t in turns)  # earlier agent turns are never extended


def test_remaining_steps_keep_their_share_when_most_examples_have_one_call():
    ones = [_two_calls().model_copy(update={"calls": _two_calls().calls[:1], "id": f"one{i}"}) for i in range(20)]
    turns = agent_turns([_two_calls(), *ones], 1000, random.Random(0))
    share = sum(t.source == "agent_remaining" for t in turns) / len(turns)
    assert 0.25 < share < 0.35  # the weight of "remaining", though 1 example in 21 has two calls
