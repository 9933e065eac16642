"""Choose the router's call/no-call thresholds on validation: `call_bias` (the decoder's first token) and the
vetoes — `min_argument_grounding`, `min_request_coverage`, `min_tool_relevance` — the setting with the fewest false
positives whose false-negative rate stays within `--max-fnr`.

    toolformer-router calibrate --checkpoint runs/x/checkpoint --data-dir data/prepared \
        --out reports/calibration.json [--pass-call-bias 1.0] [--write] [--records earlier.examples.jsonl]

One validation pass at `call_bias = --pass-call-bias` (default 0), without vetoes, records each example's
`call_margin` (call-opening logit minus text logit at the first token), `argument_grounding` (the share of its call
list's values the conversation states), `request_coverage` (the share of the request's words the called tools speak
of) and `tool_relevance` (the least MiniLM cosine between the request and a called tool). A bias b at or below the
pass's and veto thresholds turn exactly the calls with margin + b <= 0 or a field below its threshold into "no call"
and change nothing else, so each setting is scored from that one pass, without decoding again. A bias above the
pass's turns exactly the text answers with margin + b > 0 into calls: their FPR and FNR follow from the same pass,
their AST needs a pass at that bias, so it is left out. `--records` re-sweeps an earlier pass's records with the
support fields recomputed (they need no decoding). With several `--tools-per-query` (e.g. `20,200`), one pass (or
one `--records` file, in the same order) per tool count, each choosing its own setting: `--write` stores them as
`thresholds_by_tool_count`, and a request uses the setting of the count nearest its own (the signals shift with the
number of distractors: one setting cannot be right at 20 tools and at 200).
Only the validation split is used: the BFCL test categories never choose a hyperparameter.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from tqdm.auto import tqdm

from toolformer_router.checks import CallSupport
from toolformer_router.config import CallThresholds, RouterConfig
from toolformer_router.router import ToolRouter, checkpoint_folder, normalize_messages

from .evaluate import active_tools, evaluate, jsonl_line, load_router, router_batch_predictor, split_for_router
from .metrics import ExampleResult, ast_match, score, selects_gold_tools

THRESHOLD_QUANTILES = 19
"""Candidate veto thresholds: this many evenly spaced quantiles of the validation margins (or groundings)."""
BEST_SETTINGS_KEPT = 100
"""The report keeps this many qualifying veto combinations, each at its best bias, best first."""


VETO_FIELDS = {"min_argument_grounding": "argument_grounding", "min_request_coverage": "request_coverage",
               "min_tool_relevance": "tool_relevance"}
"""Each veto's `RouterConfig` key and the record field it reads: a call whose field is below the threshold is
answered in text instead (a record without the field is never vetoed)."""


def _vetoed(record: dict[str, Any], vetoes: dict[str, float | None]) -> bool:
    return any(threshold is not None and record.get(VETO_FIELDS[key]) is not None
               and record[VETO_FIELDS[key]] < threshold for key, threshold in vetoes.items())


def _calls(record: dict[str, Any], bias: float, vetoes: dict[str, float | None]) -> bool:
    """Whether the record calls at (bias, vetoes); records without a call margin had no choice and keep their
    outcome."""
    if record.get("call_margin") is None:
        return bool(record["calls"])
    return record["call_margin"] + bias > 0 and not _vetoed(record, vetoes)


def score_with_bias(records: list[dict[str, Any]], bias: float, pass_bias: float = 0.0,
                    min_grounding: float | None = None, min_coverage: float | None = None,
                    min_relevance: float | None = None) -> dict[str, dict[str, Any]]:
    """`score` of records decoded at `call_bias = pass_bias` (no veto) as if decoded at `bias <= pass_bias`
    with the vetoes `min_grounding`, `min_coverage` and `min_relevance`."""
    if bias > pass_bias:
        raise ValueError(f"only biases <= {pass_bias} (the pass's) can be scored from it: they only remove calls")
    vetoes = dict(zip(VETO_FIELDS, (min_grounding, min_coverage, min_relevance)))
    results = [ExampleResult(id=r["id"], category=r["category"], predicted=r["calls"] if _calls(r, bias, vetoes)
                             else [], gold=r["gold"], tools=r["_tools"], valid=r["valid"]) for r in records]
    return score(results)


def decision_rates(records: list[dict[str, Any]], bias: float, min_grounding: float | None = None,
                   min_coverage: float | None = None, min_relevance: float | None = None
                   ) -> tuple[float | None, float | None]:
    """(FPR, FNR) at (bias, vetoes), a bias of either sign."""
    outcomes = _Outcomes(records)
    vetoes = dict(zip(VETO_FIELDS, (min_grounding, min_coverage, min_relevance)))
    row = outcomes.rows([bias], outcomes.vetoed(vetoes), with_ast=[False])[0]
    return row["FPR"], row["FNR"]


def false_call_rates(records: list[dict[str, Any]], setting: dict[str, Any]) -> dict[str, float]:
    """FPR at `setting` (a sweep row: `call_bias` and the `VETO_FIELDS` keys) per category of the "no call"
    records (e.g. `no_call`, `no_call_foreign`, `bfcl:live_irrelevance`): which shapes of "no call" it gets
    wrong."""
    vetoes = {key: setting.get(key) for key in VETO_FIELDS}
    rates: dict[str, list[bool]] = {}
    for record in records:
        if not record["gold"]:
            rates.setdefault(record["category"], []).append(_calls(record, setting["call_bias"], vetoes))
    return {category: round(sum(calls) / len(calls), 4) for category, calls in sorted(rates.items())}


def threshold_candidates(records: list[dict[str, Any]], key: str, above: float = 0.0) -> list[float | None]:
    """None (no veto), then `THRESHOLD_QUANTILES` quantiles of the records' `key` values, each plus `above`
    (a threshold just above a value vetoes it too)."""
    values = sorted(r[key] for r in records if r.get(key) is not None)
    if not values:
        return [None]
    picks = [values[round(q * (len(values) - 1) / (THRESHOLD_QUANTILES + 1))] + above for q in
             range(1, THRESHOLD_QUANTILES + 1)]
    return [None, *sorted(set(round(p, 4) for p in picks))]


class _Outcomes:
    """The records' decision-relevant facts as arrays, so that a sweep of thousands of (bias, vetoes) settings
    counts FPR, FNR, AST and TSA without re-scoring (the same counts as `score`)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        def column(values: list[Any]) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in values], dtype=float)

        self.records = records
        self.margin = column([r.get("call_margin") for r in records])
        self.fields = {key: column([r.get(field) for r in records]) for key, field in VETO_FIELDS.items()}
        self.gold = np.array([bool(r["gold"]) for r in records])
        self.has_calls = np.array([bool(r["calls"]) for r in records])
        self.ast_if_called = np.array([ast_match(r["calls"], r["gold"], r["_tools"])[0] for r in records])
        self.selected_if_called = np.array([selects_gold_tools(r["calls"], r["gold"]) for r in records])

    def vetoed(self, vetoes: dict[str, float | None]) -> np.ndarray:
        mask = np.zeros(len(self.records), dtype=bool)
        for key, threshold in vetoes.items():
            if threshold is not None:
                mask |= self.fields[key] < threshold  # NaN (no field) compares False: never vetoed
        return mask

    def rows(self, biases: list[float], vetoed: np.ndarray, with_ast: list[bool]) -> list[dict[str, float | None]]:
        """FPR, FNR and, where `with_ast`, AST and TSA at each bias (the scored outputs are the pass's calls the
        setting keeps; without AST, the decisions alone, which a bias above the pass's also decides)."""
        bias, scored = np.array(biases, dtype=float)[:, None], np.array(with_ast, dtype=bool)[:, None]
        chose = (self.margin[None] + bias > 0) & ~vetoed[None]  # (B, N)
        decided = np.where(np.isnan(self.margin)[None], self.has_calls[None], chose)
        calls = np.where(scored, decided & self.has_calls[None], decided)
        negatives, positives = int((~self.gold).sum()), int(self.gold.sum())
        false_positives = (calls & ~self.gold).sum(1)
        false_negatives = (~calls & self.gold).sum(1)
        right = np.where(calls, self.ast_if_called, ~self.gold).sum(1)
        selected = (calls & self.gold & self.selected_if_called).sum(1)
        return [{"FPR": int(fp) / negatives if negatives else None, "FNR": int(fn) / positives if positives else None,
                 "AST": int(ast) / len(self.records) if use else None,
                 "TSA": (int(sel) / positives if positives else None) if use else None}
                for fp, fn, ast, sel, use in zip(false_positives, false_negatives, right, selected, with_ast)]


def sweep_groups(records: list[dict[str, Any]], pass_bias: float = 0.0,
                 candidates: dict[str, list[float | None]] | None = None) -> Iterator[list[dict[str, Any]]]:
    """Per combination of vetoes (the product of `candidates`' lists, keyed like `VETO_FIELDS`; a missing key
    is None only), its rows: FPR, FNR, AST and TSA at the pass's bias and at each lower bias that removes one
    more call (just below a call's margin); then FPR and FNR at each higher bias that adds one more call (just
    above a text answer's margin; AST None)."""
    outcomes = _Outcomes(records)
    margins = sorted({r["call_margin"] for r in records if r.get("call_margin") is not None})
    lower = [pass_bias] + [-(m + 1e-3) for m in margins if m + pass_bias > 0]
    higher = [-m + 1e-3 for m in reversed(margins) if m + pass_bias <= 0]
    biases, with_ast = lower + higher, [True] * len(lower) + [False] * len(higher)
    lists = [(candidates or {}).get(key) or [None] for key in VETO_FIELDS]
    for combination in itertools.product(*lists):
        vetoes = dict(zip(VETO_FIELDS, combination))
        yield [{"call_bias": round(bias, 4), **vetoes, **row}
               for bias, row in zip(biases, outcomes.rows(biases, outcomes.vetoed(vetoes), with_ast))]


def sweep_call_bias(records: list[dict[str, Any]], pass_bias: float = 0.0,
                    min_groundings: list[float | None] | None = None,
                    min_coverages: list[float | None] | None = None,
                    min_relevances: list[float | None] | None = None) -> list[dict[str, Any]]:
    """Every row of `sweep_groups` for the candidate lists `min_groundings` x `min_coverages` x `min_relevances`
    (default None only)."""
    lists = (min_groundings, min_coverages, min_relevances)
    return [row for group in sweep_groups(records, pass_bias, dict(zip(VETO_FIELDS, lists))) for row in group]


def choose_call_bias(rows: list[dict[str, Any]], max_fnr: float = 0.15) -> dict[str, Any]:
    """The row with the lowest FPR among those with FNR <= `max_fnr` (the design's targets: FPR <= 0.10 with
    FNR <= 0.15); among equal FPR the lowest FNR, then the bias closest to 0 and the fewest vetoes; the first
    row (the pass's setting) when none qualifies."""
    qualifying = [row for row in rows if _qualifies(row, max_fnr)] or [rows[0]]
    return min(qualifying, key=_preference)


def _qualifies(row: dict[str, Any], max_fnr: float) -> bool:
    return (row["FNR"] or 0.0) <= max_fnr + 1e-9


def _preference(row: dict[str, Any]) -> tuple[float, ...]:
    """Lower is better: FPR, then FNR, then the bias's size, then the number of vetoes."""
    return (round(row["FPR"] or 0.0, 9), round(row["FNR"] or 0.0, 9), abs(row["call_bias"]),
            sum(row.get(key) is not None for key in VETO_FIELDS))


def _pass_records(router: ToolRouter, args: argparse.Namespace, tools_per_query: int) -> list[dict[str, Any]]:
    """One validation pass at `--pass-call-bias` without vetoes (relevance computed, never vetoing)."""
    router.config.call_bias = args.pass_call_bias
    for key in VETO_FIELDS:
        setattr(router.config, key, None)
    router.config.min_tool_relevance = -1.0  # no cosine lies below: computed for the records, never a veto
    examples, pool = split_for_router(router, args, "validation")
    return evaluate(None, examples, tools_per_query=tools_per_query, pool=pool, seed=args.seed,
                    desc=f"calibrating on validation @ {tools_per_query} tools",
                    predict_many=router_batch_predictor(router), batch_size=args.batch_size)


def _records_path(out: Path, tools_per_query: int, several: bool) -> Path:
    """Where a pass's records are written beside the report `out`: `<out>.examples.jsonl`, or with several tool
    counts `<out>.<n>tools.examples.jsonl`."""
    return out.with_suffix(f".{tools_per_query}tools.examples.jsonl" if several else ".examples.jsonl")


def _stored_records(router: ToolRouter, args: argparse.Namespace, path: Path,
                    tools_per_query: int) -> list[dict[str, Any]]:
    """An earlier pass's records (a `--records` file), its active tools restored and the untrained support
    fields (`CallSupport`) recomputed with the current code: no decoding."""
    stem = path.name.removesuffix(".examples.jsonl").removesuffix(f".{tools_per_query}tools")
    report = path.parent / (stem + ".json")
    if report.is_file():
        stored = orjson.loads(report.read_bytes())
        if stored.get("pass_call_bias") != args.pass_call_bias:
            raise SystemExit(f"{path} comes from a pass with pass_call_bias {stored.get('pass_call_bias')}, "
                             f"not {args.pass_call_bias}")
        sizes = stored.get("tools_per_query")
        if tools_per_query not in (sizes if isinstance(sizes, list) else [sizes]):
            raise SystemExit(f"{path} comes from a pass with tools_per_query {sizes}, not {tools_per_query}")
    examples, pool = split_for_router(router, args, "validation")
    by_id = {example.id: example for example in examples}
    records = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    router.config.min_tool_relevance = -1.0
    for record in tqdm(records, desc=f"recomputing call support @ {tools_per_query} tools", unit="example"):
        example = by_id.get(record["id"])
        if example is None:
            raise SystemExit(f"{path}: example {record['id']} is not in this validation split")
        record["_tools"] = active_tools(example, tools_per_query, pool, args.seed)
        if [t["name"] for t in record["_tools"]] != record["active_tools"]:
            raise SystemExit(f"{path}: example {record['id']} had other active tools (seed, data or tool count "
                             "differ)")
        support = CallSupport()
        if record["calls"] and record.get("call_margin") is not None:
            support = router.checks.support(normalize_messages(example.messages),
                                            router.prepare_tools(record["_tools"]), record["calls"])
        record.update(dataclasses.asdict(support))
    return records


def run_calibrate_command(args: argparse.Namespace) -> dict[str, Any]:
    sizes, out = _tool_counts(args.tools_per_query), Path(args.out)
    if args.records and len(args.records) != len(sizes):
        raise SystemExit(f"--records: give one file per tool count ({len(sizes)}: {sizes}), got {len(args.records)}")
    router = load_router(args)
    stored = {size: router.config.call_thresholds(size).model_copy() for size in sizes}
    router.config.thresholds_by_tool_count = None  # each pass decodes and vetoes with the top-level setting only
    out.parent.mkdir(parents=True, exist_ok=True)
    reports = {}
    for i, size in enumerate(sizes):
        records = (_stored_records(router, args, Path(args.records[i]), size) if args.records
                   else _pass_records(router, args, size))
        _records_path(out, size, len(sizes) > 1).write_bytes(b"".join(jsonl_line(record) for record in records))
        reports[size] = _choose(records, size, args, stored[size])
    report = (reports[sizes[0]] if len(sizes) == 1 else
              {"checkpoint": str(args.checkpoint), "tools_per_query": sizes, "pass_call_bias": args.pass_call_bias,
               "max_fnr": args.max_fnr, "by_tools": reports})
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    if args.write:
        _write_choice(args.checkpoint, {size: each["chosen"] for size, each in reports.items()})
    return report


def _choose(records: list[dict[str, Any]], tools_per_query: int, args: argparse.Namespace,
            current: CallThresholds) -> dict[str, Any]:
    """Sweep one tool count's pass and pick its setting; the report, with its table printed. The checkpoint's
    `current` thresholds at that count are candidates beside the quantiles, so a choice is never worse under the
    rule than keeping them."""
    switches = {"min_argument_grounding": args.grounding_veto, "min_request_coverage": args.coverage_veto,
                "min_tool_relevance": args.relevance_veto}
    candidates = {key: [None] if switches[key] == "off" else
                  sorted(set(threshold_candidates(records, field, 1e-3)) | {getattr(current, key)},
                         key=lambda value: (value is not None, value or 0.0))
                  for key, field in VETO_FIELDS.items()}
    best_per_vetoes, chosen, chosen_group = [], None, []
    groups = sweep_groups(records, args.pass_call_bias, candidates)
    total = int(np.prod([len(values) for values in candidates.values()]))
    for group in tqdm(groups, desc=f"sweeping @ {tools_per_query} tools", total=total, unit="setting"):
        best = choose_call_bias(group, args.max_fnr)
        best_per_vetoes.append(best)
        if chosen is None or choose_call_bias([chosen, best], args.max_fnr) is best:
            chosen, chosen_group = best, group
    best_per_vetoes = sorted((row for row in best_per_vetoes if _qualifies(row, args.max_fnr)), key=_preference)

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    print(f"{tools_per_query} tools\n| call_bias | " + " | ".join(VETO_FIELDS) + " | FPR | FNR | AST |\n"
          + "|---" * (len(VETO_FIELDS) + 4) + "|")
    for row in chosen_group[:: max(1, len(chosen_group) // 20)] + [chosen]:
        print(f"| {row['call_bias']:.3f} | " + " | ".join(cell(row[key]) for key in VETO_FIELDS)
              + f" | {cell(row['FPR'])} | {cell(row['FNR'])} | {cell(row['AST'])} |")
    by_category = false_call_rates(records, chosen)
    print('FPR per kind of "no call": ' + ", ".join(f"{kind} {rate:.3f}" for kind, rate in by_category.items()))
    print(f"chosen at {tools_per_query} tools: "
          + ", ".join(f"{key} {chosen[key]}" for key in ("call_bias", *VETO_FIELDS))
          + f" (N = {len(records)} validation examples)"
          + (": more calls than the pass made, so its AST needs an `eval` pass there"
             if chosen["call_bias"] > args.pass_call_bias else ""))
    return {"checkpoint": str(args.checkpoint), "n": len(records), "tools_per_query": tools_per_query,
            "pass_call_bias": args.pass_call_bias, "max_fnr": args.max_fnr, "chosen": chosen,
            "chosen_FPR_by_category": by_category,
            "vetoes_swept": {key: len(values) for key, values in candidates.items()},
            "best_per_vetoes": best_per_vetoes[:BEST_SETTINGS_KEPT], "sweep": chosen_group}


def _write_choice(checkpoint: str, chosen: dict[int, dict[str, Any]]) -> None:
    """Store the chosen settings in the checkpoint's config.json: the top-level `call_bias` and vetoes from the
    first tool count, and with several counts each count's under `thresholds_by_tool_count` (one count removes an
    earlier map, so that its choice applies)."""
    folder = checkpoint_folder(checkpoint)
    config = orjson.loads((folder / "config.json").read_bytes())
    settings = {size: {key: row[key] for key in ("call_bias", *VETO_FIELDS)}
                for size, row in chosen.items()}
    config.update(next(iter(settings.values())))
    config["thresholds_by_tool_count"] = ({str(size): value for size, value in settings.items()}
                                          if len(settings) > 1 else None)
    RouterConfig.model_validate(config)
    (folder / "config.json").write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote call_bias, {', '.join(VETO_FIELDS)} ({', '.join(map(str, settings))} tools) to "
          f"{folder / 'config.json'}")


def _tool_counts(text: str | int) -> list[int]:
    """`--tools-per-query`: one count or a comma list of distinct positive counts."""
    try:
        sizes = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise SystemExit(f"--tools-per-query: expected counts such as 20 or 20,200, got {text!r}") from None
    if any(size < 1 for size in sizes) or len(set(sizes)) != len(sizes):
        raise SystemExit(f"--tools-per-query: counts must be distinct and positive, got {text!r}")
    return sizes
