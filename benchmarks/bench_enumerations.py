"""How often `cover_enumerations` would keep a list going, on the training side's gold calls (train + validation
BFCL live examples of a prepared folder; synthetic examples left out): on one-call examples every firing is a
spurious extra call; on multi-call examples it should fire after each call but the last.

The rule reads the gold calls as if the decoder had written them, so this measures the rule, not the model.
With `--checkpoint`, the examples of the validation splits (validation, validation_multi, validation_parallel)
whose last user message holds an enumeration are also routed with the rule off and on (20 active tools, as
`toolformer-router eval`), and scored. Nothing here reads the BFCL test categories.

    python benchmarks/bench_enumerations.py [--data-dir data/prepared] [--checkpoint default] [--out FILE]

Prints a JSON document and a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import print_table

from toolformer_router.enumerations import enumeration_unfinished, find_enumerations
from toolformer_router.training.data import load_prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--checkpoint", default=None, help="also route validation's enumeration examples")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    examples = [e for split in ("train", "validation") for e in load_prepared(args.data_dir, split)
                if e.calls and e.source.startswith("bfcl:")]
    one_call = {"n": 0, "with_enumeration": 0, "spurious": []}
    multi_call = {"n": 0, "with_enumeration": 0, "right_length": 0, "too_short": 0, "too_long": 0, "rows": []}
    for example in examples:
        query = next(m["content"] for m in reversed(example.messages) if m["role"] == "user")
        enumerations = find_enumerations(query)
        calls = [call.model_dump(include={"name", "arguments"}) for call in example.calls]
        goes_on = [enumeration_unfinished(calls[:k], enumerations) for k in range(1, len(calls) + 1)]
        counts = one_call if len(calls) == 1 else multi_call
        counts["n"] += 1
        counts["with_enumeration"] += bool(enumerations)
        if len(calls) == 1:
            if goes_on[0]:
                one_call["spurious"].append({"query": query[:160], "enumerations": enumerations})
        elif enumerations:
            # the list the rule alone would allow: it may not end where goes_on is True
            verdict = ("too_long" if goes_on[-1] else "right_length" if all(goes_on[:-1]) else "too_short")
            multi_call[verdict] += 1
            multi_call["rows"].append({"query": query[:160], "enumerations": enumerations, "goes_on": goes_on})
    report = {"data_dir": args.data_dir, "one_call": one_call, "multi_call": multi_call}
    if args.checkpoint:
        report["routed"] = route_validation(args.checkpoint, args.data_dir)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print_table([
        {"examples": "one call", "n": one_call["n"], "with an enumeration": one_call["with_enumeration"],
         "what the rule does": f"{len(one_call['spurious'])} spurious extra calls"},
        {"examples": "several calls", "n": multi_call["n"], "with an enumeration": multi_call["with_enumeration"],
         "what the rule does": f"{multi_call['too_long']} too long; {multi_call['right_length']} kept to "
                                  f"length, {multi_call['too_short']} left to the decoder"},
    ], ["examples", "n", "with an enumeration", "what the rule does"])
    for split, result in report.get("routed", {}).items():
        if result["n"]:
            print(f"{split}: {result['n']} examples with an enumeration; AST right, rule off / on: "
                  f"{result['off']['ast_ok']} / {result['on']['ast_ok']}; calls off {result['off']['calls_per_example']}"
                  f", on {result['on']['calls_per_example']}, gold {result['on']['gold_calls']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))


def route_validation(checkpoint: str, data_dir: str) -> dict[str, dict]:
    """Per rule setting, the AST matches and call counts on the validation splits' examples with an enumeration."""
    from toolformer_router import ToolRouter
    from toolformer_router.training.evaluate import _split_data, evaluate, router_batch_predictor, usable_pool

    router = ToolRouter.from_pretrained(checkpoint, disk_cache=False)
    routed: dict[str, dict] = {}
    for split in ("validation", "validation_multi", "validation_parallel"):
        examples, pool = _split_data(Path(data_dir), split, 0)
        chosen = [e for e in examples if find_enumerations(
            next(m["content"] for m in reversed(e.messages) if m["role"] == "user"))]
        if not chosen:
            routed[split] = {"n": 0}
            continue
        pool = usable_pool(router, pool)
        for setting in (False, True):
            router.config.cover_enumerations = setting
            rows = evaluate(None, chosen, tools_per_query=20, pool=pool, seed=0,
                            predict_many=router_batch_predictor(router), desc=f"{split}, rule {setting}")
            routed.setdefault(split, {"n": len(chosen)})["on" if setting else "off"] = {
                "ast_ok": sum(r["ast_ok"] for r in rows),
                "calls_per_example": [len(r["calls"]) for r in rows],
                "gold_calls": [len(r["gold"]) for r in rows],
            }
    return routed


if __name__ == "__main__":
    main()
