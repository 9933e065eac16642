"""Re-score kept evaluation records after a filter that acts on the parsed call list only (no routing again).

    python benchmarks/rescore_records.py RECORDS.examples.jsonl[.gz] --data-dir data/prepared --split validation \
        [--filter drop-repeats] [--out result.json]

A filter of this kind (`drop-repeats`: `RouterConfig.drop_repeated_calls`, applied in `ToolRouter._result` after
decoding) changes nothing the decoder sees, so applying it to an `eval` run's records gives exactly the figures
a run with the setting on would give. The records' active tools are rebuilt by name (the example's own tools,
then the split's catalog); scoring the records as kept must reproduce every stored AST outcome first, or the
script stops. Prints JSON and a table: the metrics before and after, the paired AST and TSA outcomes (McNemar
p) and the examples whose outcome changed.
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from toolformer_router.router import drop_repeats
from toolformer_router.training.data import load_prepared
from toolformer_router.training.metrics import ExampleResult, ast_match, paired_outcomes, score, selects_gold_tools

FILTERS: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {"drop-repeats": drop_repeats}


def read_records(path: Path) -> list[dict[str, Any]]:
    """An `eval` examples file (or journal; its setting line skipped), gzipped or not."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [record for line in data.splitlines() if line.strip() and "id" in (record := orjson.loads(line))]


def attach_tools(records: list[dict[str, Any]], data_dir: Path, split: str) -> None:
    """Give each record `_tools`: its active tools' dicts, by name (own tools first, then the catalog's first
    tool of that name)."""
    catalog_file = "catalog_test.jsonl" if split == "test" else "catalog_train.jsonl"
    catalog: dict[str, dict] = {}
    for line in (data_dir / catalog_file).read_bytes().splitlines():
        if line.strip():
            tool = orjson.loads(line)
            catalog.setdefault(tool["name"], tool)
    examples = {example.id: example for example in load_prepared(data_dir, split)}
    for record in records:
        if record["id"] not in examples:
            raise SystemExit(f"record {record['id']!r} is not an example of {data_dir}/{split}")
        own = {tool["name"]: tool for tool in examples[record["id"]].tools}
        record["_tools"] = [own.get(name) or catalog[name] for name in record["active_tools"]]


def _results(records: list[dict[str, Any]], calls_key: str) -> list[ExampleResult]:
    return [ExampleResult(id=r["id"], category=r["category"], predicted=r[calls_key], gold=r["gold"],
                          tools=r["_tools"], valid=r["valid"]) for r in records]


def rescore(records: list[dict[str, Any]], call_filter: Callable[[list[dict]], list[dict]]) -> dict[str, Any]:
    """Metrics of `records` as kept and after `call_filter`, their paired outcomes and the changed examples."""
    for record in records:
        if ast_match(record["calls"], record["gold"], record["_tools"])[0] != record["ast_ok"]:
            raise SystemExit(f"record {record['id']!r}: its stored AST outcome does not reproduce; the rebuilt "
                             "active tools differ from the run's (wrong --data-dir or --split?)")
        record["_filtered"] = call_filter(record["calls"])
    changed = [r for r in records if r["_filtered"] != r["calls"]]
    ast_pairs = [(r["ast_ok"], ast_match(r["_filtered"], r["gold"], r["_tools"])[0]) for r in records]
    tsa_pairs = [(selects_gold_tools(r["calls"], r["gold"]), selects_gold_tools(r["_filtered"], r["gold"]))
                 for r in records if r["gold"]]
    return {
        "n": len(records), "calls_changed": len(changed),
        "before": score(_results(records, "calls")), "after": score(_results(records, "_filtered")),
        "paired_ast": paired_outcomes(ast_pairs), "paired_tsa": paired_outcomes(tsa_pairs),
        "changed": [{"id": r["id"], "category": r["category"], "calls": len(r["calls"]),
                     "kept": len(r["_filtered"]), "gold": len(r["gold"]),
                     "ast": [r["ast_ok"], ast_match(r["_filtered"], r["gold"], r["_tools"])[0]]} for r in changed],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True, help="the prepared data the run was made on")
    parser.add_argument("--split", required=True, help="the split the run was made on")
    parser.add_argument("--filter", choices=sorted(FILTERS), default="drop-repeats")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    records = read_records(args.records)
    attach_tools(records, args.data_dir, args.split)
    result = {"records": str(args.records), "split": args.split, "filter": args.filter,
              **rescore(records, FILTERS[args.filter])}
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"\n| {args.records.name} (N = {result['n']}) | before | after `{args.filter}` |\n|---|---|---|")
    for metric in ("AST", "TSA", "FPR", "FNR", "validity"):
        before, after = result["before"][metric], result["after"][metric]
        if before["n"]:
            print(f"| {metric} (n={before['n']}) | {before['value']:.3f} | {after['value']:.3f} |")
    for name in ("ast", "tsa"):
        pairs = result[f"paired_{name}"]
        print(f"| {name.upper()}: only before / only after right, McNemar p | {pairs['only_a']} / {pairs['only_b']}, "
              f"p {pairs['mcnemar_p']:.3g} | |")


if __name__ == "__main__":
    main()
