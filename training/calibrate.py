"""Choose the router's call/no-call thresholds on validation: `call_bias` (the decoder's first token) and the
vetoes — `no_tool_margin` with a "no tool" selector, `min_argument_grounding` — the setting with the fewest false
positives whose false-negative rate stays within `--max-fnr`.

    toolformer-router calibrate --checkpoint runs/x/checkpoint --data-dir data/prepared \
        --out reports/calibration.json [--pass-call-bias 1.0] [--write]

One validation pass at `call_bias = --pass-call-bias` (default 0), without vetoes, records each example's
`call_margin` (call-opening logit minus text logit at the first token), `selection_margin` (best tool minus "no
tool", selector logits) and `argument_grounding` (the share of its call list's values the conversation states). A
bias b at or below the pass's, a selector threshold t or a grounding threshold g turns exactly the calls with
margin + b <= 0, selection margin < t or grounding < g into "no call" and changes nothing else, so each setting is
scored from that one pass, without decoding again. A bias above the pass's turns exactly the text answers with
margin + b > 0 into calls: their FPR and FNR follow from the same pass, their AST needs a pass at that bias, so
it is left out. Only the validation split is used: the BFCL test categories never choose a hyperparameter.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from toolformer_router.router import PACKAGED_CHECKPOINTS

from .evaluate import evaluate, load_router, router_batch_predictor, split_for_router
from .metrics import ExampleResult, score

THRESHOLD_QUANTILES = 19
"""Candidate veto thresholds: this many evenly spaced quantiles of the validation margins (or groundings)."""


def _calls(record: dict[str, Any], bias: float, no_tool_margin: float | None,
           min_grounding: float | None = None) -> bool:
    """Whether the record calls at (bias, no_tool_margin, min_grounding); records without a call margin had no
    choice and keep their outcome."""
    margin, selection, grounding = (record.get(k) for k in ("call_margin", "selection_margin", "argument_grounding"))
    if margin is None:
        return bool(record["calls"])
    vetoed = ((no_tool_margin is not None and selection is not None and selection < no_tool_margin)
              or (min_grounding is not None and grounding is not None and grounding < min_grounding))
    return margin + bias > 0 and not vetoed


def score_with_bias(records: list[dict[str, Any]], bias: float, no_tool_margin: float | None = None,
                    pass_bias: float = 0.0, min_grounding: float | None = None) -> dict[str, dict[str, Any]]:
    """`score` of records decoded at `call_bias = pass_bias` (no veto) as if decoded at `bias <= pass_bias`
    with the vetoes `no_tool_margin` and `min_grounding`."""
    if bias > pass_bias:
        raise ValueError(f"only biases <= {pass_bias} (the pass's) can be scored from it: they only remove calls")
    results = [ExampleResult(id=r["id"], category=r["category"],
                             predicted=r["calls"] if _calls(r, bias, no_tool_margin, min_grounding) else [],
                             gold=r["gold"], tools=r["_tools"], valid=r["valid"]) for r in records]
    return score(results)


def decision_rates(records: list[dict[str, Any]], bias: float, no_tool_margin: float | None = None,
                   min_grounding: float | None = None) -> tuple[float | None, float | None]:
    """(FPR, FNR) at (bias, no_tool_margin, min_grounding), a bias of either sign."""
    no_call = [_calls(r, bias, no_tool_margin, min_grounding) for r in records if not r["gold"]]
    call = [not _calls(r, bias, no_tool_margin, min_grounding) for r in records if r["gold"]]
    return (sum(no_call) / len(no_call) if no_call else None, sum(call) / len(call) if call else None)


def threshold_candidates(records: list[dict[str, Any]], key: str = "selection_margin",
                         above: float = 0.0) -> list[float | None]:
    """None (no veto), then `THRESHOLD_QUANTILES` quantiles of the records' `key` values, each plus `above`
    (a threshold just above a value vetoes it too)."""
    values = sorted(r[key] for r in records if r.get(key) is not None)
    if not values:
        return [None]
    picks = [values[round(q * (len(values) - 1) / (THRESHOLD_QUANTILES + 1))] + above for q in
             range(1, THRESHOLD_QUANTILES + 1)]
    return [None, *sorted(set(round(p, 4) for p in picks))]


def sweep_call_bias(records: list[dict[str, Any]], pass_bias: float = 0.0,
                    no_tool_margins: list[float | None] | None = None,
                    min_groundings: list[float | None] | None = None) -> list[dict[str, Any]]:
    """For each pair of vetoes (`no_tool_margins` x `min_groundings`, default None only): FPR, FNR, AST and
    TSA at the pass's bias and at each lower bias that removes one more call (just below a call's margin);
    then FPR and FNR at each higher bias that adds one more call (just above a text answer's margin; AST None)."""
    margins = sorted({r["call_margin"] for r in records if r.get("call_margin") is not None})
    rows = []
    for threshold in no_tool_margins or [None]:
        for grounding in min_groundings or [None]:
            vetoes = {"no_tool_margin": threshold, "min_argument_grounding": grounding}
            for bias in [pass_bias] + [-(m + 1e-3) for m in margins if m + pass_bias > 0]:
                metrics = score_with_bias(records, bias, threshold, pass_bias, grounding)
                rows.append({"call_bias": round(bias, 4), **vetoes,
                             **{k: metrics[k]["value"] for k in ("FPR", "FNR", "AST", "TSA")}})
            for bias in [-m + 1e-3 for m in reversed(margins) if m + pass_bias <= 0]:
                fpr, fnr = decision_rates(records, bias, threshold, grounding)
                rows.append({"call_bias": round(bias, 4), **vetoes, "FPR": fpr, "FNR": fnr, "AST": None, "TSA": None})
    return rows


def choose_call_bias(rows: list[dict[str, Any]], max_fnr: float = 0.15) -> dict[str, Any]:
    """The row with the lowest FPR among those with FNR <= `max_fnr` (the design's targets: FPR <= 0.10 with
    FNR <= 0.15); among equal FPR the lowest FNR, then the bias closest to 0 and the fewest vetoes; the first
    row (the pass's setting) when none qualifies."""
    qualifying = [row for row in rows if (row["FNR"] or 0.0) <= max_fnr + 1e-9] or [rows[0]]
    return min(qualifying, key=lambda row: (round(row["FPR"] or 0.0, 9), round(row["FNR"] or 0.0, 9),
                                            abs(row["call_bias"]), row.get("no_tool_margin") is not None,
                                            row.get("min_argument_grounding") is not None))


def run_calibrate_command(args: argparse.Namespace) -> dict[str, Any]:
    router = load_router(args)
    router.config.call_bias, router.config.no_tool_margin = args.pass_call_bias, None
    router.config.min_argument_grounding = None
    examples, pool = split_for_router(router, args, "validation")
    records = evaluate(None, examples, tools_per_query=args.tools_per_query, pool=pool,
                       seed=args.seed, desc="calibrating on validation", predict_many=router_batch_predictor(router),
                       batch_size=args.batch_size)
    thresholds = threshold_candidates(records) if router.model.selector.has_no_tool else [None]
    groundings = ([None] if args.grounding_veto == "off"
                  else threshold_candidates(records, "argument_grounding", above=1e-3))
    rows = sweep_call_bias(records, args.pass_call_bias, thresholds, groundings)
    chosen = choose_call_bias(rows, args.max_fnr)
    report = {"checkpoint": str(args.checkpoint), "n": len(records), "tools_per_query": args.tools_per_query,
              "pass_call_bias": args.pass_call_bias, "max_fnr": args.max_fnr, "chosen": chosen, "sweep": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    out.with_suffix(".examples.jsonl").write_bytes(b"".join(
        orjson.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + b"\n" for r in records))

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    print("| call_bias | no_tool_margin | min_argument_grounding | FPR | FNR | AST |\n|---|---|---|---|---|---|")
    for row in rows[:: max(1, len(rows) // 20)] + [chosen]:
        print(f"| {row['call_bias']:.3f} | {cell(row['no_tool_margin'])} | {cell(row['min_argument_grounding'])} "
              f"| {cell(row['FPR'])} | {cell(row['FNR'])} | {cell(row['AST'])} |")
    print(f"chosen call_bias {chosen['call_bias']}, no_tool_margin {chosen['no_tool_margin']}, "
          f"min_argument_grounding {chosen['min_argument_grounding']} "
          f"(N = {len(records)} validation examples)"
          + (": more calls than the pass made, so its AST needs an `eval` pass there"
             if chosen["call_bias"] > args.pass_call_bias else ""))
    if args.write:
        folder = PACKAGED_CHECKPOINTS / "default" if args.checkpoint == "default" else Path(args.checkpoint)
        config = orjson.loads((folder / "config.json").read_bytes())
        for key in ("call_bias", "no_tool_margin", "min_argument_grounding"):
            config[key] = chosen[key]
        (folder / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"wrote call_bias, no_tool_margin and min_argument_grounding to {folder / 'config.json'}")
    return report
