"""The call/no-call vetoes ablated on validation records decoded without them (no routing again).

    toolformer-router eval --checkpoint C --data-dir D --split validation_everyday --tools-per-query 20 \
        --set thresholds_by_tool_count=null --set min_argument_grounding=null --set min_request_coverage=null \
        --set min_tool_relevance=-1 --out runs/x.json                       # one pass, every veto off
    python benchmarks/bench_veto_ablation.py runs/x.router-validation_everyday.examples.jsonl --data-dir D \
        --split validation_everyday [--tools-per-query 20] [--checkpoint C] [--out ablation.json]

A veto only turns a call list into "no call", so each setting of the vetoes (the checkpoint's own, none, each one
left out) is scored exactly from that pass (`training.calibrate.score_with_bias`, at the pass's own call bias).
Prints JSON and a table: AST, TSA, FPR and FNR with 95 % intervals per setting, and for each veto the call examples
it declines whose calls were right (AST) and the no-call examples it declines.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from toolformer_router import ToolRouter
from toolformer_router.training.calibrate import VETO_FIELDS, _vetoed, score_with_bias
from toolformer_router.training.evaluate import active_tools, split_for_router

from common import print_table

METRICS = ("AST", "TSA", "FPR", "FNR")


def load_records(router: ToolRouter, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The pass's records with their active tools restored (`_tools`), checked against the stored names."""
    examples, pool = split_for_router(router, argparse.Namespace(data_dir=args.data_dir, seed=args.seed, limit=None),
                                      args.split)
    by_id = {e.id: e for e in examples}
    records = [orjson.loads(line) for line in args.records.read_bytes().splitlines() if line.strip()]
    for record in records:
        record["_tools"] = active_tools(by_id[record["id"]], args.tools_per_query, pool, args.seed)
        if [t["name"] for t in record["_tools"]] != record["active_tools"]:
            raise SystemExit(f"{record['id']}: other active tools than the pass had (data, seed or tool count)")
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--tools-per-query", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default="default", help="whose thresholds are 'shipped'")
    parser.add_argument("--pass-call-bias", type=float, default=None,
                        help="the pass's call_bias (default: the checkpoint's at this tool count)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    router = ToolRouter.from_pretrained(args.checkpoint)
    shipped = router.config.call_thresholds(args.tools_per_query)
    bias = shipped.call_bias if args.pass_call_bias is None else args.pass_call_bias
    records = load_records(router, args)
    thresholds = {key: getattr(shipped, key) for key in VETO_FIELDS}
    settings = {"shipped": thresholds, "none": dict.fromkeys(VETO_FIELDS)}
    settings.update({f"without {key}": {**thresholds, key: None} for key in VETO_FIELDS if thresholds[key] is not None})
    rows, report = [], {"records": str(args.records), "split": args.split, "n": len(records),
                        "tools_per_query": args.tools_per_query, "call_bias": bias, "settings": {}}
    for name, vetoes in settings.items():
        scores = score_with_bias(records, bias, bias, *(vetoes[key] for key in VETO_FIELDS))
        report["settings"][name] = {"vetoes": vetoes, **{m: scores[m] for m in METRICS}}
        rows.append({"setting": name, **{m: f"{scores[m]['value']:.3f} [{scores[m]['ci95'][0]:.2f}, "
                                             f"{scores[m]['ci95'][1]:.2f}] (n={scores[m]['n']})"
                                         if scores[m]["value"] is not None else "—" for m in METRICS}})
    for key, threshold in thresholds.items():
        if threshold is None:
            continue
        declined = [r for r in records if r["calls"] and r.get("call_margin") is not None
                    and r["call_margin"] + bias > 0 and _vetoed(r, {key: threshold})]
        report.setdefault("declined", {})[key] = {
            "right_calls": sum(1 for r in declined if r["gold"] and r["ast_ok"]),
            "wrong_calls": sum(1 for r in declined if r["gold"] and not r["ast_ok"]),
            "no_call_examples": sum(1 for r in declined if not r["gold"])}
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    print_table(rows, ["setting", *METRICS])
    if args.out:
        args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
