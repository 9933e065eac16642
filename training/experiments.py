"""Composability experiments: order independence, the scaling curve (accuracy and latency against the number
of active tools) and hot-swapping a tool; written as JSON, a markdown table and matplotlib PNGs."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import torch

from toolformer_router import ToolRouter, ToolRouterError

from .data import Example
from .evaluate import active_tools, evaluate, router_predictor, summarize


def order_independence(router: ToolRouter, examples: Sequence[Example], pool: Sequence[dict], *,
                       tools_per_query: int = 20, shuffles: int = 3, seed: int = 0) -> dict[str, Any]:
    """Route each example under several orders of the same tool set: share of bit-identical outputs and the
    spread of tool selection accuracy across orders."""
    identical, routed, skipped, selections = 0, 0, 0, [[] for _ in range(shuffles)]
    for example in examples:
        tools = active_tools(example, tools_per_query, pool, seed)
        outputs, picks = [], []
        for shuffle in range(shuffles):
            order = list(tools)
            random.Random(f"{seed}:{example.id}:{shuffle}").shuffle(order)
            try:
                result = router.route(example.messages, tools=order)
            except ToolRouterError:  # an own schema the router cannot take: not an ordering question
                break
            outputs.append(result.raw)
            picks.append(sorted(c.name for c in result.calls) == sorted(c.name for c in example.calls))
        if len(outputs) < shuffles:
            skipped += 1
            continue
        routed += 1
        identical += len(set(outputs)) == 1
        if example.calls:
            for shuffle, pick in enumerate(picks):
                selections[shuffle].append(pick)
    tsa = [statistics.fmean(s) if s else None for s in selections]
    known = [t for t in tsa if t is not None]
    return {"n": routed, "skipped": skipped, "shuffles": shuffles,
            "identical_output_share": identical / max(1, routed),
            "tsa_per_order": tsa, "delta_tsa": (max(known) - min(known)) if known else None}


def scaling_curve(router: ToolRouter, examples: Sequence[Example], pool: Sequence[dict], *,
                  counts: Sequence[int] = (1, 5, 20, 50, 200, 1000), seed: int = 0) -> list[dict[str, Any]]:
    """Accuracy and latency of the same examples at growing numbers of active tools."""
    rows = []
    for count in counts:
        count = min(count, len(pool) + 1)
        summary = summarize(evaluate(router_predictor(router), examples, tools_per_query=count, pool=pool, seed=seed,
                                     desc=f"scaling @ {count} tools"))
        overall = summary["overall"]
        rows.append({"tools": count, "n": summary["n"], "AST": overall["AST"], "TSA": overall["TSA"],
                     "FPR": overall["FPR"], "latency_p50_s": summary["latency_s"]["p50"],
                     "latency_p95_s": summary["latency_s"]["p95"]})
    return rows


def hot_swap(router: ToolRouter, tools: Sequence[dict], *, repeats: int = 5) -> dict[str, Any]:
    """Register `tools`, replace one of them `repeats` times: re-encode time, and whether every other tool's
    gists and memory stayed bit-identical."""
    router.add_tools(tools)
    before = {t.name: e for t, e in zip(router.tools, router.tool_memories(router.tools)[0])}
    victim = dict(tools[0].get("function", tools[0]))
    times, identical = [], True
    for i in range(repeats):
        changed = {**victim, "description": f"{victim.get('description', '')} (revision {i + 1})"}
        started = time.perf_counter()
        router.add_tools([changed])
        times.append(time.perf_counter() - started)
        after = dict(zip((t.name for t in router.tools), router.tool_memories(router.tools)[0]))
        for name, entry in before.items():
            if name != victim["name"]:
                identical &= torch.equal(entry.gists, after[name].gists) and torch.equal(entry.memory, after[name].memory)
    router.remove_tools([t.name for t in router.tools])
    return {"tools": len(tools), "repeats": repeats, "others_bit_identical": bool(identical),
            "reencode_ms_p50": 1000 * statistics.median(times), "reencode_ms_max": 1000 * max(times)}


def plot_scaling(rows: Sequence[dict[str, Any]], path: Path, baselines: dict[str, Sequence[dict]] | None = None) -> None:
    """Accuracy (AST, TSA with 95 % intervals) and p50 latency against active tools (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy, latency) = plt.subplots(1, 2, figsize=(10, 4))
    for label, series in {"router": rows, **(baselines or {})}.items():
        x = [r["tools"] for r in series]
        for metric, style in (("AST", "-o"), ("TSA", "--s")):
            values = [r[metric]["value"] if r[metric]["value"] is not None else float("nan") for r in series]
            errors = [[v - (r[metric]["ci95"] or [v, v])[0] for v, r in zip(values, series)],
                      [(r[metric]["ci95"] or [v, v])[1] - v for v, r in zip(values, series)]]
            accuracy.errorbar(x, values, yerr=errors, fmt=style, capsize=3, label=f"{label} {metric}")
        latency.plot(x, [1000 * r["latency_p50_s"] for r in series], "-o", label=label)
    accuracy.set(xscale="log", xlabel="active tools", ylabel="accuracy", ylim=(0, 1), title="accuracy vs tools")
    latency.set(xscale="log", xlabel="active tools", ylabel="p50 latency (ms)", title="latency vs tools")
    accuracy.legend(fontsize=7)
    latency.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_experiments(folder: Path, results: dict[str, Any]) -> None:
    """experiments.json, experiments.md and scaling.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiments.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    lines = []
    if "scaling" in results:
        lines += ["| active tools | N | AST | TSA | FPR | p50 latency | p95 latency |", "|---|---|---|---|---|---|---|"]
        for r in results["scaling"]:
            cells = [f"{r[m]['value']:.3f} [{r[m]['ci95'][0]:.2f}, {r[m]['ci95'][1]:.2f}]"
                     if r[m]["value"] is not None else "—" for m in ("AST", "TSA", "FPR")]
            lines.append(f"| {r['tools']} | {r['n']} | " + " | ".join(cells)
                         + f" | {1000 * r['latency_p50_s']:.0f} ms | {1000 * r['latency_p95_s']:.0f} ms |")
        plot_scaling(results["scaling"], folder / "scaling.png")
    if "order" in results:
        o = results["order"]
        lines += ["", f"Order independence (N = {o['n']}, {o['shuffles']} orders): identical outputs "
                      f"{o['identical_output_share']:.3f}, ΔTSA {o['delta_tsa']}"]
    if "hot_swap" in results:
        h = results["hot_swap"]
        lines += ["", f"Hot-swap ({h['tools']} tools, {h['repeats']} replacements): others bit-identical "
                      f"{h['others_bit_identical']}, re-encode p50 {h['reencode_ms_p50']:.1f} ms"]
    (folder / "experiments.md").write_text("\n".join(lines) + "\n")


_NOT_LOSSES = frozenset({"time", "step", "stage_steps", "stage_index", "global_step", "elapsed_s", "lr",
                         "examples_per_s", "tokens_per_s"})


def plot_training_log(log_path: Path, png_path: Path) -> None:
    """Loss curves (every logged loss part, per stage, against the global step) and gate values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [orjson.loads(line) for line in Path(log_path).read_bytes().splitlines() if line.strip()]
    records = [r for r in records if "global_step" in r and "loss" in r]
    figure, (losses, gates) = plt.subplots(1, 2, figsize=(11, 4))
    parts = dict.fromkeys(key for r in records for key, value in r.items()
                          if isinstance(value, float | int) and key not in _NOT_LOSSES)
    for key in parts:
        points = [(r["global_step"], r[key]) for r in records if key in r]
        if points:
            losses.plot(*zip(*points), label=key, linewidth=1)
    steps = [r["global_step"] for r in records]
    for layer, series in enumerate(zip(*(r["gates"] for r in records))):
        gates.plot(steps, series, linewidth=1, label=f"gate {layer}")
    losses.set(xlabel="optimizer step", ylabel="loss", title="training losses")
    gates.set(xlabel="optimizer step", ylabel="tanh(gate)", title="cross-attention gates")
    losses.legend(fontsize=7)
    gates.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
