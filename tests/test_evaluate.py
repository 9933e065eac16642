"""The evaluation harness: active tool sets, scoring of the router's output, the report files."""

import json

import pytest

from conftest import EMAIL, STOCK, WEATHER
from toolformer_router.training.data import Example, GoldCall
from toolformer_router.training.evaluate import (
    Journal,
    active_tools,
    baseline_batch_predictor,
    evaluate,
    markdown_table,
    router_batch_predictor,
    router_predictor,
    summarize,
    write_report,
)

POOL = [{"name": f"distractor_{i}", "description": f"tool {i}", "parameters": {"type": "object", "properties": {}}}
        for i in range(30)] + [{"name": "get_weather", "description": "an impostor with the gold name",
                                "parameters": {"type": "object", "properties": {}}}]


def _example(i, tools, text, calls, source="bfcl:simple_python"):
    return Example(id=f"e{i}", source=source, tools=[t.get("function", t) for t in tools],
                   messages=[{"role": "user", "content": text}], calls=[GoldCall(**c) for c in calls])


EXAMPLES = [
    _example(0, [WEATHER], "weather in Paris?", [{"name": "get_weather", "arguments": {"city": "Paris"},
                                                   "allowed": {"city": ["Paris"], "unit": ["", "celsius"]}}]),
    _example(1, [EMAIL, STOCK], "hello there", [], source="bfcl:irrelevance"),
]


def test_active_tools_are_seeded_sized_and_never_shadow_gold_names():
    tools = active_tools(EXAMPLES[0], 20, POOL, seed=0)
    assert len(tools) == 20 and len({t["name"] for t in tools}) == 20
    assert sum(t["name"] == "get_weather" for t in tools) == 1
    assert next(t for t in tools if t["name"] == "get_weather")["description"].startswith("Current weather")
    assert tools == active_tools(EXAMPLES[0], 20, POOL, seed=0)
    assert tools != active_tools(EXAMPLES[0], 20, POOL, seed=1)
    assert active_tools(EXAMPLES[0], 1, POOL, seed=0) == EXAMPLES[0].tools


def test_scripted_predictions_are_scored_by_bfcl_rules(tmp_path):
    answers = {"weather in Paris?": [{"name": "get_weather", "arguments": {"city": "paris"}}], "hello there": []}

    def scripted(messages, tools):
        return {"calls": answers[messages[-1]["content"]], "raw": "", "latency_s": 0.01, "prompt_tokens": 9,
                "tools_in_prompt": len(tools) - 2 * (messages[-1]["content"] == "hello there"), "valid": True}

    records = evaluate(scripted, EXAMPLES, tools_per_query=5, pool=POOL)
    assert [r["ast_ok"] for r in records] == [True, True]  # BFCL string standardisation: "paris" == "Paris"
    summary = summarize(records)
    assert summary["overall"]["AST"]["value"] == 1.0 and summary["overall"]["AST"]["n"] == 2
    assert summary["overall"]["FPR"]["value"] == 0.0 and summary["overall"]["TSA"]["n"] == 1
    assert summary["prompt_tokens_mean"] == 9 and summary["tools_in_prompt_mean"] == 4  # 5 and 3 of 5 tools
    write_report(tmp_path / "summary.json", {"scripted": summary}, {"scripted": records}, {"seed": 0})
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["systems"]["scripted"]["n"] == 2
    lines = (tmp_path / "summary.scripted.examples.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "_tools" not in json.loads(lines[0])
    assert "| scripted | simple_python |" in markdown_table({"scripted": summary})


def test_a_journaled_evaluation_resumes_where_it_stopped(tmp_path):
    """Records are journaled as they are made; a resumed run of the same setting predicts only the examples still
    missing (a torn last line included) and returns the same records; another setting is refused."""
    examples = [_example(i, [WEATHER], f"weather in city {i}?", []) for i in range(5)]
    asked = []

    def predict(messages, tools):
        asked.append(messages[-1]["content"])
        if len(asked) == 4:
            raise KeyboardInterrupt  # the session's time limit
        return {"calls": [], "raw": messages[-1]["content"], "latency_s": 0.01, "prompt_tokens": 3, "valid": True}

    path, setting = tmp_path / "run.router.journal.jsonl", {"system": "router", "seed": 0}
    with pytest.raises(KeyboardInterrupt):
        evaluate(predict, examples, tools_per_query=3, pool=POOL, journal=Journal(path, setting, resume=False))
    assert len(path.read_bytes().splitlines()) == 1 + 3  # the setting, then the three finished records
    with path.open("ab") as handle:
        handle.write(b'{"id": "e3", "act')  # killed mid-write
    asked.clear()
    resumed = evaluate(predict, examples, tools_per_query=3, pool=POOL, journal=Journal(path, setting, resume=True))
    assert asked == ["weather in city 3?", "weather in city 4?"]
    assert [r["output"] for r in resumed] == [f"weather in city {i}?" for i in range(5)]
    assert all(r["_tools"] == active_tools(e, 3, POOL, seed=0) for r, e in zip(resumed, examples))
    assert len(path.read_bytes().splitlines()) == 1 + 5
    asked.clear()
    again = evaluate(predict, examples, tools_per_query=3, pool=POOL, journal=Journal(path, setting, resume=True))
    assert asked == [] and again == resumed
    with pytest.raises(SystemExit, match="another setting"):
        Journal(path, {"system": "router", "seed": 1}, resume=True)
    Journal(path, {"system": "router", "seed": 1}, resume=False)  # without --resume: started afresh
    assert len(path.read_bytes().splitlines()) == 1


def test_gold_without_allowed_values_scores_nested_objects_exactly():
    tool = {"name": "order", "description": "Order food.", "parameters": {
        "type": "object", "required": ["item"], "properties": {
            "item": {"type": "object", "properties": {"dish": {"type": "string"}, "count": {"type": "integer"}}}}}}
    example = _example(2, [tool], "two pizzas and one soup", [{"name": "order", "arguments": {"item": {
        "dish": "pizza", "count": 2}}}, {"name": "order", "arguments": {"item": {"dish": "soup", "count": 1}}}],
        source="synthetic_parallel")
    both = [{"name": "order", "arguments": {"item": {"dish": "soup", "count": 1}}},
            {"name": "order", "arguments": {"item": {"dish": "Pizza", "count": 2}}}]

    def scripted(calls):
        return lambda messages, tools: {"calls": calls, "raw": "", "latency_s": 0.0, "prompt_tokens": 1, "valid": True}

    assert evaluate(scripted(both), [example], tools_per_query=1, pool=POOL)[0]["ast_ok"]
    wrong_count = [both[0], {"name": "order", "arguments": {"item": {"dish": "pizza", "count": 3}}}]
    assert not evaluate(scripted(wrong_count), [example], tools_per_query=1, pool=POOL)[0]["ast_ok"]
    assert not evaluate(scripted(both[:1]), [example], tools_per_query=1, pool=POOL)[0]["ast_ok"]


def test_baseline_batches_are_scored_like_single_answers():
    """A baseline's `predict_batch` answers become records: validity checked against each example's own active
    tools, the prompt's size and the batch's latency kept; batches of `batch_size` requests."""
    from toolformer_router.training.baselines import BaselinePrediction

    class Scripted:
        name = "scripted"

        def __init__(self):
            self.batches = []

        def predict_batch(self, requests):
            self.batches.append(len(requests))
            return [BaselinePrediction([{"name": "get_weather", "arguments": {"city": "Paris"}}]
                                       if "weather" in messages[-1]["content"] else
                                       [{"name": "made_up", "arguments": {}}], "raw", 40, 1.5, tools_in_prompt=3)
                    for messages, _ in requests]

    baseline = Scripted()
    examples = [*EXAMPLES, _example(2, [WEATHER], "weather in Rome?", [{"name": "get_weather",
                                                                         "arguments": {"city": "Rome"}}])]
    records = evaluate(None, examples, tools_per_query=4, pool=POOL, predict_many=baseline_batch_predictor(baseline),
                       batch_size=2)
    assert baseline.batches == [2, 1]
    assert [r["valid"] for r in records] == [True, False, True]  # made_up is none of the active tools
    assert [r["ast_ok"] for r in records] == [True, False, False]  # Rome was asked, Paris answered
    assert all(r["latency_s"] == 1.5 and r["tools_in_prompt"] == 3 and r["prompt_tokens"] == 40 for r in records)


def test_router_outputs_are_counted_valid(make_router):
    router = make_router()
    records = evaluate(router_predictor(router, max_new_tokens=40), EXAMPLES, tools_per_query=4, pool=POOL)
    assert len(records) == 2 and all(r["tools_per_query"] == 4 for r in records)
    for record in records:
        assert record["valid"] or record["output"].startswith("[")  # only a cut-off call list may be invalid
    assert summarize(records)["overall"]["validity"]["n"] == 2


def test_batched_evaluation_matches_one_at_a_time(make_router):
    router = make_router()
    single = evaluate(router_predictor(router, max_new_tokens=40), EXAMPLES, tools_per_query=4, pool=POOL)
    batched = evaluate(None, EXAMPLES, tools_per_query=4, pool=POOL,
                       predict_many=router_batch_predictor(router, max_new_tokens=40), batch_size=2)
    router.close()
    keys = ("id", "active_tools", "output", "calls", "ast_ok", "valid")
    assert [{k: r[k] for k in keys} for r in batched] == [{k: r[k] for k in keys} for r in single]


def test_composability_experiments_write_a_report(make_router, tmp_path):
    from toolformer_router.training.experiments import hot_swap, order_independence, scaling_curve, write_experiments

    router = make_router(max_new_tokens=30)
    order = order_independence(router, EXAMPLES, POOL, tools_per_query=6, shuffles=3)
    assert order["identical_output_share"] == 1.0 and order["delta_tsa"] == 0.0  # gists carry no position
    scaling = scaling_curve(router, EXAMPLES, POOL, counts=(1, 8))
    assert [r["tools"] for r in scaling] == [1, 8] and all(r["n"] == 2 for r in scaling)
    swap = hot_swap(router, [WEATHER, EMAIL, STOCK], repeats=2)
    assert swap["others_bit_identical"] and swap["reencode_ms_p50"] > 0 and router.tools == []
    write_experiments(tmp_path, {"scaling": scaling, "order": order, "hot_swap": swap})
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    assert "Order independence" in (tmp_path / "experiments.md").read_text()


def test_cli_prepares_data_and_evaluates_a_checkpoint(tmp_path, tokenizer):
    from conftest import TINY_ROUTER_CONFIG, tiny_backbone
    from toolformer_router import RouterConfig, ToolRouter
    from toolformer_router.cli import main

    backbone = tmp_path / "backbone"
    tiny_backbone("llama", len(tokenizer)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    checkpoint = ToolRouter.from_backbone(str(backbone), config=RouterConfig(**{**TINY_ROUTER_CONFIG, "max_new_tokens": 24})
                                          ).save_pretrained(tmp_path / "ckpt")
    main(["data", "prepare", "--out", str(tmp_path / "data")])
    assert json.loads((tmp_path / "data" / "counts.json").read_text())["test"] > 1000
    out = tmp_path / "report" / "summary.json"
    run = ["eval", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--split", "validation",
           "--tools-per-query", "5", "--limit", "1"]
    overrides = ["--set", "call_bias=0.5", "--set", "min_tool_relevance=0.2", "--set", "max-text-tokens=16",
                 "--set", "answer_without_tools=off"]
    main([*run, "--out", str(out), "--experiments", "order", *overrides])
    meta = json.loads(out.read_text())["meta"]
    assert meta["call_bias"] == 0.5 and meta["min_tool_relevance"] == 0.2
    assert meta["max_text_tokens"] == 16 and meta["answer_without_tools"] is False
    assert meta["set"] == {"call_bias": 0.5, "min_tool_relevance": 0.2, "max_text_tokens": 16,
                           "answer_without_tools": False}
    summary = json.loads(out.read_text())["systems"]["router/validation"]
    assert summary["n"] == len(summary["by_category"]) >= 3  # one example per validation category
    journal = out.parent / "summary.router-validation.journal.jsonl"
    assert len(journal.read_bytes().splitlines()) == 1 + summary["n"]
    routed = json.loads(journal.read_bytes().splitlines()[0])["setting"]["config"]  # the router's config, as run
    assert (routed["call_bias"], routed["min_tool_relevance"], routed["max_text_tokens"]) == (0.5, 0.2, 16)
    assert routed["answer_without_tools"] is False and routed["max_new_tokens"] == 24  # the rest: the checkpoint's
    main([*run, "--out", str(out), *overrides, "--resume"])  # every record reused: the same summary
    assert json.loads(out.read_text())["systems"]["router/validation"] == summary
    with pytest.raises(SystemExit, match="holds records of another setting"):  # another --set: another setting
        main([*run, "--out", str(out), *overrides, "--set", "call_bias=0.25", "--resume"])
    with pytest.raises(SystemExit, match="holds records of another setting"):  # no --set: the checkpoint's own
        main([*run, "--out", str(out), "--resume"])
    assert len(journal.read_bytes().splitlines()) == 1 + summary["n"]  # refused runs leave the records alone
    assert summary["overall"]["validity"]["value"] is not None
    assert (out.parent / "summary.md").is_file() and (out.parent / "experiments.json").is_file()
    main(["calibrate", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--tools-per-query",
          "5", "--limit", "1", "--max-fnr", "1.0", "--out", str(tmp_path / "calibration.json"), "--write"])
    calibration = json.loads((tmp_path / "calibration.json").read_text())
    assert calibration["n"] == summary["n"] and calibration["sweep"][0]["call_bias"] == 0.0
    assert len((tmp_path / "calibration.examples.jsonl").read_text().splitlines()) == calibration["n"]
    assert set(calibration["chosen_FPR_by_category"]) == {"live_irrelevance", "no_call", "no_call_foreign"}
    assert ToolRouter.from_pretrained(checkpoint, disk_cache=False).config.call_bias == calibration["chosen"]["call_bias"]
    # the same choice from the pass's records, without decoding again
    main(["calibrate", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--tools-per-query",
          "5", "--max-fnr", "1.0", "--records", str(tmp_path / "calibration.examples.jsonl"),
          "--out", str(tmp_path / "again" / "calibration.json")])
    again = json.loads((tmp_path / "again" / "calibration.json").read_text())
    assert again["n"] == calibration["n"] and again["chosen"] == calibration["chosen"]
    with pytest.raises(SystemExit, match="tools_per_query 5, not 6"):
        main(["calibrate", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--tools-per-query",
              "6", "--records", str(tmp_path / "calibration.examples.jsonl"), "--out", str(tmp_path / "x.json")])
    # one choice per tool count, each as a pass at that count alone gives it, stored per count
    main(["calibrate", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--tools-per-query",
          "3,5", "--limit", "1", "--max-fnr", "1.0", "--out", str(tmp_path / "two" / "calibration.json"), "--write"])
    two = json.loads((tmp_path / "two" / "calibration.json").read_text())
    assert two["tools_per_query"] == [3, 5] and two["by_tools"]["5"]["chosen"] == calibration["chosen"]
    assert (tmp_path / "two" / "calibration.3tools.examples.jsonl").is_file()
    stored = ToolRouter.from_pretrained(checkpoint, disk_cache=False).config
    for count in (3, 5):
        assert stored.call_thresholds(count).call_bias == two["by_tools"][str(count)]["chosen"]["call_bias"]
    with pytest.raises(SystemExit, match="one file per tool count"):
        main(["calibrate", "--checkpoint", str(checkpoint), "--data-dir", str(tmp_path / "data"), "--tools-per-query",
              "3,5", "--records", str(tmp_path / "calibration.examples.jsonl"), "--out", str(tmp_path / "x.json")])
    # a call/no-call setting given with --set applies at every tool count of the checkpoint, not only the top level
    main([*run, "--out", str(tmp_path / "set" / "s.json"), "--set", "call_bias=0.75",
          "--set", "min_tool_relevance=off"])
    routed = json.loads((tmp_path / "set" / "s.router-validation.journal.jsonl").read_bytes().splitlines()[0])
    routed = routed["setting"]["config"]
    assert sorted(routed["thresholds_by_tool_count"]) == ["3", "5"]
    for thresholds in [routed, *routed["thresholds_by_tool_count"].values()]:
        assert thresholds["call_bias"] == 0.75 and thresholds["min_tool_relevance"] is None


def test_call_bias_calibration_scores_each_threshold_from_one_pass():
    from toolformer_router.training.calibrate import choose_call_bias, score_with_bias, sweep_call_bias

    tool = {"name": "f", "description": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    call = [{"name": "f", "arguments": {"x": 1}}]

    def record(i, gold, calls, margin):
        return {"id": str(i), "category": "c", "calls": calls, "gold": gold, "_tools": [tool], "valid": True,
                "call_margin": margin}

    records = [record(0, [{"f": {"x": [1]}}], call, 2.0),  # right call, confident
               record(1, [], call, 0.5),  # false positive, unsure
               record(2, [], [], -1.0),  # right "no call"
               record(3, [{"f": {"x": [1]}}], [], -0.2),  # false negative
               record(4, [], [], None)]  # no choice was left: never changed
    at_zero = score_with_bias(records, 0.0)
    assert (at_zero["FPR"]["value"], at_zero["FNR"]["value"], at_zero["AST"]["value"]) == (1 / 3, 0.5, 0.6)
    rows = sweep_call_bias(records)
    assert [row["call_bias"] for row in rows] == [0.0, -0.501, -2.001, 0.201, 1.001]
    chosen = choose_call_bias(rows, max_fnr=0.5)
    assert chosen["call_bias"] == -0.501 and (chosen["FPR"], chosen["FNR"], chosen["AST"]) == (0.0, 0.5, 0.8)
    # above 0 the false negative (margin -0.2) calls, then the right "no call" (margin -1.0) too
    assert [(row["FPR"], row["FNR"], row["AST"]) for row in rows[3:]] == [(1 / 3, 0.0, None), (2 / 3, 0.0, None)]
    assert choose_call_bias(rows, max_fnr=0.15)["call_bias"] == 0.201
    assert choose_call_bias(rows[:3], max_fnr=0.15)["call_bias"] == 0.0  # nothing qualifies: leave it at 0
    tied = [{"call_bias": 0.0, "FPR": 0.2, "FNR": 0.3}, {"call_bias": 0.5, "FPR": 0.3, "FNR": 0.14},
            {"call_bias": 0.6, "FPR": 0.3, "FNR": 0.1}]
    assert choose_call_bias(tied, max_fnr=0.15)["call_bias"] == 0.6  # the same FPR with fewer misses
    with pytest.raises(ValueError):
        score_with_bias(records, 0.5)


def test_calibration_sweeps_min_argument_grounding_from_one_pass():
    """The grounding veto drops exactly the calls whose argument grounding is below the threshold; records
    without a grounding (no checkable value) are never vetoed."""
    from toolformer_router.training.calibrate import choose_call_bias, decision_rates, sweep_call_bias, \
        threshold_candidates

    tool = {"name": "f", "description": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    call, gold = [{"name": "f", "arguments": {"x": 1}}], [{"f": {"x": [1]}}]

    def record(i, gold, calls, grounding):
        return {"id": str(i), "category": "c", "calls": calls, "gold": gold, "_tools": [tool], "valid": True,
                "call_margin": 1.0, "argument_grounding": grounding}

    records = [record(0, gold, call, 1.0), record(1, [], call, 0.0), record(2, [], call, None),
               record(3, gold, call, 0.5)]
    assert decision_rates(records, 0.0) == (1.0, 0.0)
    assert decision_rates(records, 0.0, 0.5) == (0.5, 0.0)  # record 1 vetoed, record 2 unchecked
    assert decision_rates(records, 0.0, 0.6) == (0.5, 0.5)  # and the half-stated right call
    candidates = threshold_candidates(records, "argument_grounding", above=1e-3)
    assert candidates[0] is None and 0.001 in candidates and 0.501 in candidates
    rows = sweep_call_bias(records, 0.0, candidates)
    chosen = choose_call_bias(rows, max_fnr=0.15)
    assert (chosen["min_argument_grounding"], chosen["FPR"], chosen["FNR"], chosen["AST"]) == (0.001, 0.5, 0.0, 0.75)


def test_calibration_sweeps_every_veto_and_agrees_with_scoring_each_setting():
    """The sweep crosses the vetoes (here argument grounding x request coverage x tool relevance); each row's FPR,
    FNR, AST and TSA are those `score_with_bias` gives for its setting, and a field a record lacks never vetoes
    it."""
    from toolformer_router.training.calibrate import (
        choose_call_bias, false_call_rates, score_with_bias, sweep_call_bias)

    tool = {"name": "f", "description": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    other = {"name": "g", "description": "g", "parameters": {"type": "object", "properties": {}}}
    call, gold = [{"name": "f", "arguments": {"x": 1}}], [{"f": {"x": [1]}}]
    wrong_value, wrong_tool = [{"name": "f", "arguments": {"x": 2}}], [{"name": "g", "arguments": {}}]

    def record(i, gold, calls, margin, grounding, coverage, relevance):
        return {"id": str(i), "category": "c", "calls": calls, "gold": gold, "_tools": [tool, other], "valid": True,
                "call_margin": margin, "argument_grounding": grounding, "request_coverage": coverage,
                "tool_relevance": relevance}

    records = [record(0, gold, call, 2.0, 1.0, 0.8, 0.7),  # right call, well supported
               record(1, [], call, 1.5, 1.0, 0.1, 0.5),  # false positive: grounded values, a tool off the request
               record(2, [], wrong_tool, 0.5, None, 0.6, 0.1),  # false positive with nothing to ground
               record(3, gold, wrong_value, 1.0, 0.5, 0.7, 0.6),  # the right tool, a wrong value
               record(4, gold, wrong_tool, -0.5, None, None, None),  # wrong tool, only at the pass bias
               record(5, [], [], -2.0, None, None, None)]  # right "no call"
    rows = sweep_call_bias(records, 1.0, [None, 0.6], [None, 0.5], [None, 0.3])
    vetoes = ("min_argument_grounding", "min_request_coverage", "min_tool_relevance")
    assert {tuple(r[k] for k in vetoes) for r in rows} == {
        (g, c, t) for g in (None, 0.6) for c in (None, 0.5) for t in (None, 0.3)}
    for row in rows:
        if row["AST"] is None:
            continue
        scored = score_with_bias(records, row["call_bias"], 1.0, *(row[k] for k in vetoes))
        assert [row[k] for k in ("FPR", "FNR", "AST", "TSA")] == [scored[k]["value"] for k in ("FPR", "FNR", "AST", "TSA")]
    at_pass = {tuple(r[k] for k in vetoes): r for r in rows if r["call_bias"] == 1.0}
    assert (at_pass[None, None, None]["FPR"], at_pass[None, 0.5, None]["FPR"]) == (2 / 3, 1 / 3)  # coverage drops 1
    assert at_pass[None, None, 0.3]["FPR"] == 1 / 3  # relevance drops record 2
    assert at_pass[0.6, None, None]["FNR"] == 1 / 3  # grounding drops record 3, keeps record 2 (nothing to ground)
    chosen = choose_call_bias(rows, max_fnr=0.4)
    assert (chosen["min_request_coverage"], chosen["min_tool_relevance"], chosen["FPR"]) == (0.5, 0.3, 0.0)
    # FPR per kind of "no call": record 1 as a sibling case, record 2 as another task's tool, record 5 as a third
    for i, kind in ((1, "no_call"), (2, "no_call_foreign"), (5, "live_irrelevance")):
        records[i]["category"] = kind
    assert false_call_rates(records, at_pass[None, None, None]) == {
        "live_irrelevance": 0.0, "no_call": 1.0, "no_call_foreign": 1.0}
    assert false_call_rates(records, at_pass[None, None, 0.3]) == {
        "live_irrelevance": 0.0, "no_call": 1.0, "no_call_foreign": 0.0}
    assert false_call_rates(records, {**at_pass[None, None, None], "call_bias": -1.6}) == {
        "live_irrelevance": 0.0, "no_call": 0.0, "no_call_foreign": 0.0}


def test_calibration_keeps_the_current_threshold_when_no_quantile_beats_it():
    """The quantile grid skips values; the checkpoint's current thresholds are candidates too, so a choice is
    never worse under the rule than keeping them."""
    from types import SimpleNamespace

    from toolformer_router.config import CallThresholds
    from toolformer_router.training.calibrate import _choose

    tool = {"name": "f", "description": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}
    call, gold = [{"name": "f", "arguments": {"x": 1}}], [{"f": {"x": [1]}}]
    # 40 calls at coverage 0.01 … 0.40; the four least covered are false calls. The grid's thresholds just above
    # the 3rd and the 5th value either keep the 4th false call or veto the 5th, a right one.
    records = [{"id": str(i), "category": "no_call" if i < 4 else "c", "calls": call, "gold": [] if i < 4 else gold,
                "_tools": [tool], "valid": True, "call_margin": 1.0, "request_coverage": (i + 1) / 100}
               for i in range(40)]
    args = SimpleNamespace(grounding_veto="on", coverage_veto="on", relevance_veto="on",
                           pass_call_bias=1.0, max_fnr=0.0, checkpoint="x")
    from_grid = _choose(records, 20, args, CallThresholds())
    assert from_grid["chosen"]["FPR"] == 0.25 and from_grid["chosen"]["FNR"] == 0.0
    kept = _choose(records, 20, args, CallThresholds(min_request_coverage=0.045))
    assert (kept["chosen"]["min_request_coverage"], kept["chosen"]["FPR"], kept["chosen"]["FNR"]) == (0.045, 0.0, 0.0)
    assert kept["chosen_FPR_by_category"] == {"no_call": 0.0}


def test_set_overrides_apply_in_order_and_call_thresholds_at_every_tool_count():
    from toolformer_router.config import CallThresholds, RouterConfig
    from toolformer_router.training.evaluate import apply_overrides

    config = RouterConfig(thresholds_by_tool_count={3: {}, 200: {"call_bias": -1.0, "min_tool_relevance": 0.3}})
    applied = apply_overrides(config, [("call_bias", "0.5"), ("min-tool-relevance", "0.1"),
                                       ("min_tool_relevance", "off"), ("answer_without_tools", "off"),
                                       ("decoder_layers", "[0, 4]"), ("system_prompt", "123"),
                                       ("max_text_tokens", "16")])
    assert applied == {"call_bias": 0.5, "min_tool_relevance": None, "answer_without_tools": False,
                       "decoder_layers": (0, 4), "system_prompt": "123", "max_text_tokens": 16}
    assert "call_bias" in CallThresholds.model_fields and "min_tool_relevance" in CallThresholds.model_fields
    for count in (1, 3, 20, 200, 1000):  # the top level and each count's set
        thresholds = config.call_thresholds(count)
        assert thresholds.call_bias == 0.5 and thresholds.min_tool_relevance is None
    assert config.answer_without_tools is False and config.decoder_layers == (0, 4) and config.max_text_tokens == 16
    assert config.system_prompt == "123"  # text that JSON reads as a number, kept as text for a text field
    assert type(config).model_validate(config.model_dump()) == config  # still a valid config


def test_set_is_checked_against_the_whole_config():
    from toolformer_router.config import RouterConfig
    from toolformer_router.training.evaluate import apply_overrides

    config = RouterConfig()
    with pytest.raises(SystemExit, match="multiple of cross_attention_kv_heads"):  # valid alone, not with the rest
        apply_overrides(config, [("cross_attention_kv_heads", "3")])
    assert config == RouterConfig()  # a refused override changes nothing
    with pytest.raises(SystemExit, match="not a setting of the router's config"):
        apply_overrides(config, [("no_such_setting", "1")])


def test_eval_set_names_the_valid_keys_for_an_unknown_one(capsys):
    from toolformer_router.cli import main
    from toolformer_router.config import RouterConfig

    with pytest.raises(SystemExit) as error:
        main(["eval", "--out", "unused.json", "--set", "call_bais=0.5"])
    message = str(error.value.code)
    assert message.startswith("error: --set call_bais: not a setting") and "did you mean call_bias?" in message
    assert all(name in message.split("valid keys: ")[1].split(", ") for name in RouterConfig.model_fields)


@pytest.mark.parametrize(("setting", "expected"), [
    ("call_bias=high", "call_bias=high: Input should be a valid number"),
    ("call_bias=nan", "call_bias=nan: NaN is no setting"),
    ("call_bias=off", "call_bias=off: Input should be a valid number"),  # not optional: off is no value
    ("min_tool_relevance=1.5", "min_tool_relevance=1.5: Input should be less than or equal to 1"),
    ("max_text_tokens=2.5", "max_text_tokens=2.5: Input should be a valid integer"),
    ("answer_without_tools=maybe", "answer_without_tools=maybe: Input should be a valid boolean"),
])
def test_eval_set_rejects_a_bad_value_with_a_clear_error(setting, expected):
    from toolformer_router.cli import main

    with pytest.raises(SystemExit) as error:  # before any checkpoint is loaded
        main(["eval", "--out", "unused.json", "--set", setting])
    assert str(error.value.code).startswith(f"error: --set {expected}")


def test_eval_set_needs_key_equals_value(capsys):
    from toolformer_router.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--out", "unused.json", "--set", "call_bias"])
    assert "expected KEY=VALUE, got 'call_bias'" in capsys.readouterr().err
