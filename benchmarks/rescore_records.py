"""Re-score kept evaluation records after a filter that acts on the parsed call list only (no routing again).

    python benchmarks/rescore_records.py RECORDS.examples.jsonl[.gz] --data-dir data/prepared --split validation \
        [--filter drop-unstated-optionals] [--limit N [--seed S]] [--out result.json]

A filter of this kind (`drop-unstated-optionals`: `RouterConfig.drop_unstated_optionals`, applied in
`ToolRouter._result` after decoding and after the call decision) changes nothing the decoder sees, so applying it
to an `eval` run's records gives exactly the figures a run with the setting on would give. The records' active
tools are rebuilt by name (the example's own tools, then the split's catalog); scoring the records as kept must
reproduce every stored AST outcome first, or the script stops. `--limit` keeps the examples `eval --limit` would
route (N per category, seeded), e.g. the subset the baselines ran on. Prints JSON and a table: the metrics before
and after, the paired AST and TSA outcomes (McNemar p) and the examples whose outcome changed. Several `--filter`s
apply in the order given.
"""

from __future__ import annotations

import argparse
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from toolformer_router.grounding import ConversationText, drop_unstated_optionals
from toolformer_router.router import conversation_texts, normalize_messages
from toolformer_router.schema import normalize_tools
from toolformer_router.training.data import load_prepared
from toolformer_router.training.evaluate import calls_are_valid, limit_per_category
from toolformer_router.training.metrics import ExampleResult, ast_match, paired_outcomes, score, selects_gold_tools

CallFilter = Callable[[list[dict[str, Any]], dict[str, Any]], list[dict[str, Any]]]
"""(a record's parsed calls, the record with `_tools`, `_schemas` and `_messages`) → the calls the setting
would return."""

FILTERS: dict[str, CallFilter] = {
    "drop-unstated-optionals": lambda calls, record: drop_unstated_optionals(
        calls, record["_schemas"],
        ConversationText(conversation_texts(record["_messages"]))),
}


def read_records(path: Path) -> list[dict[str, Any]]:
    """An `eval` examples file (or journal; its setting line skipped), gzipped or not."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [record for line in data.splitlines() if line.strip() and "id" in (record := orjson.loads(line))]


def attach_tools(records: list[dict[str, Any]], data_dir: Path, split: str) -> None:
    """Give each record `_tools`: its active tools' dicts, by name (own tools first, then the catalog's first
    tool of that name), `_schemas`: their normalised parameters by name (what the grammar enforces), and
    `_messages`: its example's conversation, normalised as the router reads it."""
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
        record["_schemas"] = {tool.name: tool.parameters for tool in normalize_tools(record["_tools"])}
        record["_messages"] = normalize_messages(examples[record["id"]].messages)


def _results(records: list[dict[str, Any]], calls_key: str, valid_key: str) -> list[ExampleResult]:
    return [ExampleResult(id=r["id"], category=r["category"], predicted=r[calls_key], gold=r["gold"],
                          tools=r["_tools"], valid=r[valid_key]) for r in records]


def _still_valid(record: dict[str, Any]) -> bool:
    """Whether the filtered calls still validate: the stored outcome, unless the filter changed the calls and
    made them fail the normalised schemas the grammar enforces. (Where the rebuilt tools fail the kept calls
    too, e.g. a catalog tool that shares its name with another, the filter is not blamed.)"""
    if not record["valid"] or record["_filtered"] == record["calls"]:
        return record["valid"]
    schemas = [{"name": name, "parameters": parameters} for name, parameters in record["_schemas"].items()]
    return calls_are_valid(record["_filtered"], schemas) or not calls_are_valid(record["calls"], schemas)


def rescore(records: list[dict[str, Any]], call_filter: CallFilter) -> dict[str, Any]:
    """Metrics of `records` as kept and after `call_filter`, their paired outcomes and the changed examples."""
    for record in records:
        if ast_match(record["calls"], record["gold"], record["_tools"])[0] != record["ast_ok"]:
            raise SystemExit(f"record {record['id']!r}: its stored AST outcome does not reproduce; the rebuilt "
                             "active tools differ from the run's (wrong --data-dir or --split?)")
        record["_filtered"] = call_filter(record["calls"], record)
        record["_valid_after"] = _still_valid(record)
    changed = [r for r in records if r["_filtered"] != r["calls"]]
    ast_pairs = [(r["ast_ok"], ast_match(r["_filtered"], r["gold"], r["_tools"])[0]) for r in records]
    tsa_pairs = [(selects_gold_tools(r["calls"], r["gold"]), selects_gold_tools(r["_filtered"], r["gold"]))
                 for r in records if r["gold"]]
    return {
        "n": len(records), "calls_changed": len(changed),
        "before": score(_results(records, "calls", "valid")),
        "after": score(_results(records, "_filtered", "_valid_after")),
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
    parser.add_argument("--filter", choices=sorted(FILTERS), action="append",
                        help="the setting to apply (default drop-unstated-optionals); several apply in the order "
                             "given")
    parser.add_argument("--limit", type=int, help="only the examples `eval --limit N` routes (N per category)")
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed (which examples --limit keeps)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    records = read_records(args.records)
    if args.limit is not None:
        kept = {e.id for e in limit_per_category(load_prepared(args.data_dir, args.split), args.limit, args.seed)}
        records = [record for record in records if record["id"] in kept]
    attach_tools(records, args.data_dir, args.split)
    names = args.filter or ["drop-unstated-optionals"]

    def combined(calls: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
        for name in names:
            calls = FILTERS[name](calls, record)
        return calls

    result = {"records": str(args.records), "split": args.split, "filter": " + ".join(names), "limit": args.limit,
              **rescore(records, combined)}
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"\n| {args.records.name} (N = {result['n']}) | before | after `{result['filter']}` |\n|---|---|---|")
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
