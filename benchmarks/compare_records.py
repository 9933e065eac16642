"""Paired comparison of two evaluations on the same examples: per-example AST (or TSA) outcomes from two record
files (`eval`'s `*.examples.jsonl` or journals), joined by example id and active tools.

    python benchmarks/compare_records.py A.examples.jsonl B.examples.jsonl [--metric tsa] [--names a,b] [--out result.json]

Prints JSON and a table: examples both got right, only A, only B, neither, and the exact two-sided McNemar
p-value over the discordant pairs (`training.metrics.paired_outcomes`), overall and per category; and how many
examples have the same output (the raw text the grammar accepted, and the calls), with the ones that differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from toolformer_router.training.metrics import paired_outcomes, selects_gold_tools

OUTCOMES = {
    "ast": lambda record: bool(record["ast_ok"]),
    "tsa": lambda record: selects_gold_tools(record["calls"], record["gold"]) if record["gold"] else None,
}
"""Per-example outcome by metric; None where the metric does not count the example (TSA: no gold call, as in
`training.metrics.score`)."""


def load_records(path: Path) -> dict[tuple[str, tuple[str, ...]], dict[str, Any]]:
    """Records by (example id, active tools); a journal's setting line is skipped."""
    records = {}
    for line in path.read_bytes().splitlines():
        record = orjson.loads(line) if line.strip() else {}
        if "id" in record:
            records[record["id"], tuple(record["active_tools"])] = record
    return records


def compare(a: dict, b: dict, metric: str = "ast") -> dict[str, Any]:
    """Paired outcomes of `metric` ("ast" or "tsa") on the examples both hold, overall and per category."""
    outcome = OUTCOMES[metric]
    by_category: dict[str, list[tuple[bool, bool]]] = {}
    for key in a.keys() & b.keys():
        pair = outcome(a[key]), outcome(b[key])
        if None not in pair:
            by_category.setdefault(a[key]["category"], []).append(pair)
    return {"overall": paired_outcomes([pair for pairs in by_category.values() for pair in pairs]),
            "by_category": {name: paired_outcomes(pairs) for name, pairs in sorted(by_category.items())},
            "only_in_a": len(a.keys() - b.keys()), "only_in_b": len(b.keys() - a.keys())}


def output_differences(a: dict, b: dict) -> dict[str, Any]:
    """How many examples both hold whose output (raw text and calls) is identical, and the ones that differ."""
    shared = sorted(a.keys() & b.keys())
    differ = [{"id": key[0], "category": a[key]["category"], "a": a[key]["output"], "b": b[key]["output"]}
              for key in shared if (a[key]["output"], a[key]["calls"]) != (b[key]["output"], b[key]["calls"])]
    return {"n": len(shared), "identical": len(shared) - len(differ), "different": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--metric", choices=sorted(OUTCOMES), default="ast", help="the outcome compared")
    parser.add_argument("--names", default="A,B", help="two labels for the table, comma-separated")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    name_a, name_b = args.names.split(",")
    result = {"a": str(args.a), "b": str(args.b), "metric": args.metric,
              **compare(records_a := load_records(args.a), records_b := load_records(args.b), args.metric),
              "outputs": output_differences(records_a, records_b)}
    if not result["overall"]["n"]:
        raise SystemExit(f"{args.a} and {args.b} share no example (same id and active tools)")
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    label = args.metric.upper()
    print(f"\n| category | N | both | only {name_a} | only {name_b} | neither | {label} {name_a} | {label} {name_b} "
          "| McNemar p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in [("overall", result["overall"]), *result["by_category"].items()]:
        print(f"| {name} | {row['n']} | {row['both']} | {row['only_a']} | {row['only_b']} | {row['neither']} | "
              f"{row['accuracy_a']:.3f} | {row['accuracy_b']:.3f} | {row['mcnemar_p']:.3g} |")
    outputs = result["outputs"]
    print(f"\nidentical outputs: {outputs['identical']} of {outputs['n']}")
    for difference in outputs["different"]:
        print(f"- {difference['id']} ({difference['category']})\n  {name_a}: {difference['a'][:200]!r}\n"
              f"  {name_b}: {difference['b'][:200]!r}")


if __name__ == "__main__":
    main()
