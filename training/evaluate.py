"""Evaluation on BFCL: the router (and baselines) on the same examples with the same active tools, scored
with BFCL's AST rules and the router metrics (TSA, PF1, VR, EM, FPR, FNR), each with N and a 95 % interval.

    toolformer-router eval --checkpoint X --suite bfcl [--split test] [--tools-per-query 20] --out report/summary.json
        [--set KEY=VALUE ...] [--resume]

`--set` overrides one field of the checkpoint's `RouterConfig` for the run (validated with the whole config; a
call/no-call setting at every tool count); the overridden configuration is part of the journals' setting.

Each system's records are journaled as they are made (`<out stem>.<system>.journal.jsonl`); `--resume` reuses
those of the same setting, so a run cut off by a time limit, or a later run with a larger `--limit`, only
evaluates the examples still missing.

Active tools per query = the example's own functions + distractors drawn (seeded) from the same side's
catalog, never one with the name of an own tool; the order is shuffled per example.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import hashlib
import json
import math
import random
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import orjson
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter, ValidationError
from tqdm.auto import tqdm

from toolformer_router import ToolRouter, ToolRouterError
from toolformer_router.config import CallThresholds, RouterConfig
from toolformer_router.router import checkpoint_folder

from .data import Example, load_prepared, prepare
from .metrics import ExampleResult, ast_match, score, score_by

METRICS = ("AST", "TSA", "PF1", "VR", "EM", "FPR", "FNR", "validity")
Predictor = Callable[[list[dict], list[dict]], dict[str, Any]]
BatchPredictor = Callable[[list[tuple[list[dict], list[dict]]]], list[dict[str, Any]]]


def active_tools(example: Example, count: int, pool: Sequence[dict], seed: int) -> list[dict]:
    """The example's own tools plus distractors from `pool` up to `count` (never one of its `absent_tools`),
    shuffled (seeded by example id)."""
    rng = random.Random(f"{seed}:{example.id}")
    own = list(example.tools)
    names = {t["name"] for t in own} | {c.name for c in example.calls} | set(example.absent_tools)
    needed = max(0, count - len(own))
    candidates = [t for t in pool if t["name"] not in names]
    drawn = rng.sample(candidates, min(len(candidates), needed + 16))
    if len({t["name"] for t in drawn}) < needed:  # the pool repeats names: draw on through all of it
        first = {id(t) for t in drawn}
        rest = [t for t in candidates if id(t) not in first]
        rng.shuffle(rest)
        drawn += rest
    chosen: list[dict] = []
    for tool in drawn:
        if len(chosen) == needed:
            break
        if tool["name"] not in names:
            names.add(tool["name"])
            chosen.append(tool)
    tools = own + chosen
    rng.shuffle(tools)
    return tools


def _allowed_values(value: Any) -> list[Any]:
    """One argument value as BFCL's list of allowed values; a dict's own values are such lists too (one level
    deep, as BFCL's `dict_checker` reads them)."""
    if isinstance(value, dict):
        return [{key: [inner] for key, inner in value.items()}]
    return [value]


def gold_form(example: Example) -> list[dict]:
    """BFCL `ground_truth` form of the gold calls ([] = no call); calls without BFCL's `allowed` values
    (synthetic, composed) allow exactly their own arguments."""
    return [{c.name: c.allowed if c.allowed is not None else {k: _allowed_values(v) for k, v in c.arguments.items()}}
            for c in example.calls]


def category(example: Example) -> str:
    return example.source.split(":", 1)[-1]


def calls_are_valid(calls: list[dict], tools: list[dict]) -> bool:
    """Every call names an active tool and its arguments validate against that tool's schema."""
    schemas = {t["name"]: t["parameters"] for t in tools}
    return all(c["name"] in schemas and Draft202012Validator(schemas[c["name"]]).is_valid(c["arguments"])
               for c in calls)


def usable_pool(router: ToolRouter, pool: Sequence[dict]) -> list[dict]:
    """The catalog tools the router accepts (valid, enforceable, within `max_schema_tokens`): distractors are
    drawn from these, so every system sees the same tool sets."""
    prepared = []
    for raw in pool:
        try:
            prepared += router.prepare_tools([raw])
        except ToolRouterError:
            continue
    try:
        router.tool_texts(prepared)  # every schema's length counted in one batch, the ones that fit memoised
    except ToolRouterError:
        pass  # a schema too long even without descriptions: the pass below leaves it out
    usable = []
    for raw in pool:
        try:
            router.check_tools([raw])
        except ToolRouterError:
            continue
        usable.append(raw)
    return usable


def _router_output(result: Any, tools: list[dict]) -> dict[str, Any]:
    """A route result (or the `ToolRouterError` it raised: counted wrong) as an evaluation output."""
    if isinstance(result, ToolRouterError):  # e.g. an example's own schema over max_schema_tokens
        return {"calls": [], "raw": "", "error": str(result), "latency_s": 0.0, "prompt_tokens": None, "valid": True}
    calls = [{"name": c.name, "arguments": c.arguments} for c in result.calls]
    cut_call = result.raw.startswith("[") and not calls
    return {"calls": calls, "raw": result.raw, "latency_s": result.usage.latency_s,
            "prompt_tokens": result.usage.input_tokens, "valid": not cut_call and calls_are_valid(calls, tools),
            "closed_early": bool(calls) and result.finish_reason == "length", "call_margin": result.call_margin,
            "argument_grounding": result.argument_grounding,
            "request_coverage": result.request_coverage, "tool_relevance": result.tool_relevance}


def router_predictor(router: ToolRouter, max_new_tokens: int | None = None) -> Predictor:
    def predict(messages: list[dict], tools: list[dict]) -> dict[str, Any]:
        try:
            result = router.route(messages, tools=tools, max_new_tokens=max_new_tokens)
        except ToolRouterError as error:
            result = error
        return _router_output(result, tools)

    return predict


def router_batch_predictor(router: ToolRouter, max_new_tokens: int | None = None) -> BatchPredictor:
    """Routes a batch of (messages, tools) pairs concurrently through `aroute` (decoded together, each with its
    own tools); `latency_s` is then each request's time inside the shared batch."""

    async def routes(pairs: list[tuple[list[dict], list[dict]]]) -> list[Any]:
        return await asyncio.gather(*(router.aroute(m, tools=t, max_new_tokens=max_new_tokens) for m, t in pairs),
                                    return_exceptions=True)

    def predict_many(pairs: list[tuple[list[dict], list[dict]]]) -> list[dict[str, Any]]:
        results = asyncio.run(routes(pairs))
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ToolRouterError):
                raise result
        return [_router_output(result, tools) for result, (_, tools) in zip(results, pairs)]

    return predict_many


def jsonl_line(record: dict[str, Any]) -> bytes:
    """A record as one JSON line, without its in-memory fields (keys starting with "_", e.g. the tool dicts)."""
    return orjson.dumps({k: v for k, v in record.items() if not k.startswith("_")}) + b"\n"


class Journal:
    """An evaluation's records as they are made, one JSON line each after a first line holding the `setting`
    (system, checkpoint, configuration, tools per query, seed): a run that stops (a session's time limit) loses
    nothing, and a later run with `resume` reuses every record of the same setting, example and active tools.
    """

    def __init__(self, path: Path, setting: dict[str, Any], resume: bool) -> None:
        self.path, self.done = Path(path), {}
        if resume and self.path.is_file():
            lines = self.path.read_bytes().splitlines()
            stored = orjson.loads(lines[0]).get("setting") if lines else None
            if stored != orjson.loads(orjson.dumps(setting)):
                raise SystemExit(f"{self.path} holds records of another setting ({stored}); delete it or run "
                                 "without --resume")
            for line in lines[1:]:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:  # the last line of a run that was killed mid-write
                    continue
                self.done[record["id"], tuple(record["active_tools"])] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("wb") as handle:  # rewritten whole: a torn last line never survives a resume
            handle.write(orjson.dumps({"setting": setting}) + b"\n")
            handle.writelines(orjson.dumps(record) + b"\n" for record in self.done.values())

    def reused(self, example: Example, tools: list[dict]) -> dict[str, Any] | None:
        record = self.done.get((example.id, tuple(t["name"] for t in tools)))
        return None if record is None else {**record, "_tools": tools}

    def add(self, records: list[dict[str, Any]]) -> None:
        with self.path.open("ab") as handle:
            handle.writelines(jsonl_line(record) for record in records)


def evaluate(
    predict: Predictor | None, examples: Sequence[Example], *, tools_per_query: int, pool: Sequence[dict],
    seed: int = 0, desc: str = "evaluating", predict_many: BatchPredictor | None = None, batch_size: int = 8,
    journal: Journal | None = None,
) -> list[dict[str, Any]]:
    """Run `predict` (or `predict_many` on batches of `batch_size`) on every example with its active tools;
    returns one record per example, in order. With a `journal`, its records are reused and new ones appended."""
    tool_sets = [active_tools(example, tools_per_query, pool, seed) for example in examples]
    records = [journal.reused(e, t) if journal else None for e, t in zip(examples, tool_sets)]
    todo = [i for i, record in enumerate(records) if record is None]
    with tqdm(total=len(examples), initial=len(examples) - len(todo), desc=desc, unit="example") as progress:
        step = batch_size if predict_many is not None else 1
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            started = time.perf_counter()
            if predict_many is not None:
                outputs = predict_many([(examples[i].messages, tool_sets[i]) for i in chunk])
            else:
                outputs = [predict(examples[chunk[0]].messages, tool_sets[chunk[0]])]
            elapsed = time.perf_counter() - started
            for i, output in zip(chunk, outputs):
                records[i] = _record(examples[i], tool_sets[i], output, output.get("latency_s") or elapsed)
            if journal:
                journal.add([records[i] for i in chunk])
            progress.update(len(chunk))
    return records


def _record(example: Example, tools: list[dict], output: dict[str, Any], latency: float) -> dict[str, Any]:
    gold = gold_form(example)
    ok, reason = ast_match(output["calls"], gold, tools)
    return {
        "id": example.id, "category": category(example),
        "query": next((m["content"] for m in reversed(example.messages) if m["role"] == "user"), ""),
        "active_tools": [t["name"] for t in tools], "tools_per_query": len(tools),
        "output": output["raw"], "calls": output["calls"], "gold": gold,
        "ast_ok": ok, "reason": output.get("error") or reason, "valid": bool(output.get("valid", True)),
        "closed_early": bool(output.get("closed_early")), "call_margin": output.get("call_margin"),
        "argument_grounding": output.get("argument_grounding"),
        "request_coverage": output.get("request_coverage"), "tool_relevance": output.get("tool_relevance"),
        "prompt_tokens": output.get("prompt_tokens"), "tools_in_prompt": output.get("tools_in_prompt"),
        "latency_s": latency, "_tools": tools,
    }


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Metrics overall and per category (value, n, ci95), and latency percentiles."""
    results = [ExampleResult(id=r["id"], category=r["category"], predicted=r["calls"], gold=r["gold"],
                             tools=r["_tools"], valid=r["valid"]) for r in records]
    latencies = sorted(r["latency_s"] for r in records)
    return {
        "n": len(records),
        "closed_early": sum(r.get("closed_early", False) for r in records),
        "overall": score(results),
        "by_category": score_by(results),
        "latency_s": {"p50": statistics.median(latencies),
                      "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]}
        if latencies else None,
        "prompt_tokens_mean": _mean_of(records, "prompt_tokens"),
        "tools_in_prompt_mean": _mean_of(records, "tools_in_prompt"),
    }


def _mean_of(records: Sequence[dict[str, Any]], key: str) -> float | None:
    """The mean of `key` over the records that have it (None when none has)."""
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def _cell(metric: dict[str, Any] | None) -> str:
    if not metric or metric.get("value") is None:
        return "—"
    low, high = metric["ci95"]
    return f"{metric['value']:.3f} [{low:.2f}, {high:.2f}] (n={metric['n']})"


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per (system, category); columns = METRICS with 95 % intervals and N."""
    lines = ["| system | category | " + " | ".join(METRICS) + " | p50 latency |",
             "|---|---|" + "---|" * len(METRICS) + "---|"]
    for system, summary in summaries.items():
        rows = [("all", summary["overall"])] + sorted(summary["by_category"].items())
        latency = summary.get("latency_s") or {}
        for name, metrics in rows:
            lat = f"{latency['p50'] * 1000:.0f} ms" if name == "all" and latency else ""
            lines.append(f"| {system} | {name} | " + " | ".join(_cell(metrics.get(m)) for m in METRICS) + f" | {lat} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, summaries: dict[str, dict[str, Any]], records: dict[str, list[dict]],
                 meta: dict[str, Any]) -> None:
    """summary JSON at `out`, per-example JSONL and a markdown table beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps({"meta": meta, "systems": summaries}, option=orjson.OPT_INDENT_2))
    for system, rows in records.items():
        with (out.parent / f"{out.stem}.{system.replace('/', '-')}.examples.jsonl").open("wb") as handle:
            for row in rows:
                handle.write(jsonl_line(row))
    (out.parent / f"{out.stem}.md").write_text(markdown_table(summaries))


def _split_data(data_dir: Path | None, split: str, seed: int) -> tuple[list[Example], list[dict]]:
    """Examples of a split and its distractor pool (test: the test-side catalog; validation: training side)."""
    if data_dir is None:
        data_dir = Path(".toolformer-eval-data")
    if not (data_dir / "test.jsonl").is_file():
        prepare(data_dir, seed=seed)
    catalog = "catalog_test.jsonl" if split == "test" else "catalog_train.jsonl"
    pool = [orjson.loads(line) for line in (data_dir / catalog).read_bytes().splitlines() if line.strip()]
    return load_prepared(data_dir, split), pool


def limit_per_category(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None:
        return list(examples)
    by_category: dict[str, list[Example]] = {}
    for example in examples:
        by_category.setdefault(category(example), []).append(example)
    chosen = []
    for name in sorted(by_category):
        group = by_category[name]
        chosen += random.Random(f"{seed}:{name}").sample(group, min(limit, len(group)))
    return chosen


def load_router(args: argparse.Namespace) -> ToolRouter:
    """The `--checkpoint` router on `--device` (in `--dtype`), without its load-time warnings. Its relevance encoder loads on
    the first route that needs it: a run whose router records all come from a journal never loads it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ToolRouter.from_pretrained(args.checkpoint, device=args.device, dtype=getattr(args, "dtype", None),
                                          preload_relevance=False)


def split_for_router(router: ToolRouter, args: argparse.Namespace, split: str) -> tuple[list[Example], list[dict]]:
    """A split's examples (at most `--limit` per category) and the distractor pool the router accepts."""
    examples, pool = _split_data(Path(args.data_dir) if args.data_dir else None, split, args.seed)
    return limit_per_category(examples, args.limit, args.seed), usable_pool(router, pool)


def _validation_message(error: ValidationError) -> str:
    """A pydantic error as one line: each problem's message, after its location when it has one."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in error.errors())


def _override_value(key: str, text: str, validate: Callable[[Any], Any]) -> Any:
    """The value `--set KEY=VALUE` stands for, as `validate` returns it: VALUE read as JSON when it is JSON (a
    number, true/false, null, a list), else as text (the text itself too when its JSON reading is refused);
    "off" or "none" first tries None (an optional setting turned off). SystemExit on a value none of these fit."""
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    candidates = [parsed] if isinstance(parsed, str) else [parsed, text]
    if text.strip().lower() in ("off", "none"):
        candidates.insert(0, None)
    first_error = None
    for candidate in candidates:
        try:
            value = validate(candidate)
        except ValidationError as error:
            first_error = first_error or error
            continue
        if isinstance(value, float) and math.isnan(value):
            raise SystemExit(f"error: --set {key}={text}: NaN is no setting")
        return value
    raise SystemExit(f"error: --set {key}={text}: {_validation_message(first_error)}")


def _override_key(key: str, fields: Sequence[str]) -> str:
    """`--set`'s KEY as a config field name (dashes read as underscores); SystemExit naming the valid keys when
    it is none."""
    name = key.strip().replace("-", "_")
    if name not in fields:
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SystemExit(f"error: --set {key}: not a setting of the router's config{hint}; valid keys: "
                         f"{', '.join(fields)}")
    return name


def check_overrides(overrides: Sequence[tuple[str, str]], config_type: type[RouterConfig] = RouterConfig) -> None:
    """Each `--set KEY=VALUE` checked against its field alone (before a checkpoint is loaded): an unknown key or
    a value of the wrong type or range fails at once. `apply_overrides` checks the whole config again."""
    fields = config_type.model_fields
    for key, text in overrides:
        field = fields[_override_key(key, list(fields))]
        adapter = TypeAdapter(Annotated[field.annotation, field])
        _override_value(key, text, adapter.validate_python)


def apply_overrides(config: RouterConfig, overrides: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Apply `--set KEY=VALUE` overrides to `config` in place, in order, each validated with the whole config
    (`model_validate` of its fields with the new value). A call/no-call setting (a `CallThresholds` field) is
    set at every tool count (`set_call_threshold`), any other field on the config. Returns the values set, by
    field name."""
    applied: dict[str, Any] = {}
    for key, text in overrides:
        name = _override_key(key, list(type(config).model_fields))

        def validate(value: Any, name: str = name) -> Any:
            return getattr(type(config).model_validate({**config.model_dump(), name: value}), name)

        value = _override_value(key, text, validate)
        if name in CallThresholds.model_fields:
            config.set_call_threshold(name, value)
        else:
            setattr(config, name, value)
        applied[name] = value
    return applied


def run_eval_command(args: argparse.Namespace) -> None:
    overrides = getattr(args, "set", None) or []
    check_overrides(overrides)  # a wrong key or value fails before the checkpoint loads
    router = load_router(args)
    applied = apply_overrides(router.config, overrides)
    summaries, records = {}, {}
    out = Path(args.out)
    common = {"tools_per_query": args.tools_per_query, "seed": args.seed}

    def journal(system: str, setting: dict[str, Any]) -> Journal:
        path = out.parent / f"{out.stem}.{system.replace('/', '-')}.journal.jsonl"
        return Journal(path, {"system": system, **common, **setting}, resume=args.resume)

    router_setting = {"checkpoint": str(args.checkpoint), "weights": _weights_fingerprint(args.checkpoint),
                      "config": router.config.model_dump(mode="json"),
                      **({"dtype": args.dtype} if getattr(args, "dtype", None) else {})}
    for split in args.split or ["test"]:
        examples, pool = split_for_router(router, args, split)
        system = f"router/{split}"
        rows = evaluate(None, examples, tools_per_query=args.tools_per_query, pool=pool, seed=args.seed,
                        desc=f"{split} @ {args.tools_per_query} tools", predict_many=router_batch_predictor(router),
                        batch_size=args.batch_size, journal=journal(system, router_setting))
        summaries[system], records[system] = summarize(rows), rows
        for name in filter(None, args.baselines.split(",")):
            baseline = _baseline(name, router.device)
            system = f"{name}/{split}"
            rows = evaluate(None, examples, tools_per_query=args.tools_per_query, pool=pool, seed=args.seed,
                            desc=f"{name} / {split}", predict_many=baseline_batch_predictor(baseline),
                            batch_size=args.baseline_batch_size,
                            journal=journal(system, {"max_new_tokens": BASELINE_MAX_NEW_TOKENS}))
            summaries[system], records[system] = summarize(rows), rows
    thresholds = router.config.call_thresholds(args.tools_per_query)  # the call/no-call setting at this count
    settings = {**router.config.model_dump(mode="json"), **thresholds.model_dump(mode="json")}
    scalars = {key: value for key, value in settings.items()
               if value is None or isinstance(value, (bool, int, float, str))}  # lists and tables: in the journal
    meta = {**scalars, "set": {key: settings[key] for key in applied},
            "checkpoint": str(args.checkpoint), "tools_per_query": args.tools_per_query, "seed": args.seed,
            "batch_size": args.batch_size, "baseline_batch_size": args.baseline_batch_size,
            "limit_per_category": args.limit, "device": str(router.device)}
    write_report(out, summaries, records, meta)
    print(markdown_table(summaries))
    experiments = set(filter(None, args.experiments.split(",")))
    if experiments:
        _run_experiments(router, experiments, args, examples, pool)


def _weights_fingerprint(checkpoint: str) -> str | None:
    """SHA-256 of a checkpoint folder's weights (None for an untrained default)."""
    files = sorted(checkpoint_folder(checkpoint).glob("*.safetensors"))
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest() if files else None


BASELINE_MAX_NEW_TOKENS = 128
"""Bounds the CPU time of the baselines' prose answers."""


def _baseline(name: str, device: Any = None):
    from .baselines import FullSchemaPrompting, RetrievalThenPrompting

    prompting = FullSchemaPrompting.from_default(device=device, max_new_tokens=BASELINE_MAX_NEW_TOKENS)
    if name == "full-schema":
        return prompting
    if name == "minilm-top3":
        return RetrievalThenPrompting(prompting, top_k=3)
    raise SystemExit(f"unknown baseline {name!r}: full-schema, minilm-top3")


def baseline_batch_predictor(baseline) -> BatchPredictor:
    """A baseline's `predict_batch` as the harness's batch predictor; `latency_s` is each batch's wall time."""

    def predict_many(pairs: list[tuple[list[dict], list[dict]]]) -> list[dict[str, Any]]:
        return [{"calls": prediction.calls, "raw": prediction.raw, "latency_s": prediction.latency_s,
                 "prompt_tokens": prediction.prompt_tokens, "tools_in_prompt": prediction.tools_in_prompt,
                 "valid": calls_are_valid(prediction.calls, tools)}
                for prediction, (_, tools) in zip(baseline.predict_batch(pairs), pairs)]

    return predict_many


def _run_experiments(router: ToolRouter, experiments: set[str], args: argparse.Namespace,
                     examples: Sequence[Example], pool: Sequence[dict]) -> None:
    from .experiments import hot_swap, order_independence, scaling_curve, write_experiments

    results: dict[str, Any] = {}
    if "scaling" in experiments:
        counts = [int(c) for c in args.scaling_counts.split(",")]
        results["scaling"] = scaling_curve(router, examples, pool, counts=counts, seed=args.seed)
    if "order" in experiments:
        results["order"] = order_independence(router, examples, pool, tools_per_query=args.tools_per_query,
                                              seed=args.seed)
    if "hotswap" in experiments:
        results["hot_swap"] = hot_swap(router, list({t["name"]: t for t in pool}.values())[:50])  # unique names
    write_experiments(Path(args.out).parent, results)
    print((Path(args.out).parent / "experiments.md").read_text())
