"""Route latency of two versions of the engine side by side, in one run, through the public API.

    python benchmarks/bench_route_compare.py --old-ref <git ref> [--tool-counts 5,20,200,1000] [--repeats 10]
        [--device cpu|cuda] [--dtype bfloat16] [--out FILE]

The old version is checked out from `--old-ref` into a temporary git worktree and assembled into an importable
package; each version runs in its own worker process (loaded once), and the two are called in alternation —
the same query, the same tools, one route each in turn — so both see the same machine state. Per tool count:
p50 / p95 of the "auto" route (`ToolRouter.route(query, tools=...)` with the checkpoint's own config) on the
weather query and of a text answer ("Hi! How are you?"), the decoder's forward passes per route and the
host's time per forward pass (route time minus the forward passes' time, at p50), the text answer's ms per
output token, and whether both versions gave the same output. For reference, in the new version's worker: the backbone's own greedy
generation speed (`generate`, ms per token) and the full-schema prefill of the weather query.

Prints a JSON document and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine, percentiles, print_table  # noqa: E402

WEATHER = "Find me the weather forecast for Berlin for the next three days, in celsius."
GREETING = "Hi! How are you?"


# ----------------------------------------------------------------------------------------------- the worker
def serve(device: str | None, dtype: str | None) -> None:
    """Worker: load the default router once, then answer one JSON command per stdin line."""
    import warnings

    import torch

    from bench_engine import full_schema_prompt, prefill, usable_catalog
    from toolformer_router import ToolRouter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router = ToolRouter.from_pretrained("default", device=device, dtype=dtype, disk_cache=False)
    catalog: list = []
    forwards: list[float] = []
    decode = router.model.decode

    def timed_decode(*args, **kwargs):  # the decoder's forward passes, timed apart from the host's work
        started = time.perf_counter()
        hidden = decode(*args, **kwargs)
        forwards.append(time.perf_counter() - started)
        return hidden

    router.model.decode = timed_decode
    for line in sys.stdin:
        command = json.loads(line)
        if len(catalog) < command.get("tools", 0):
            catalog = usable_catalog(router, command["tools"])
        tools = catalog[: command.get("tools", 0)]
        if command["kind"] == "prepare":
            router.tool_memories(tools)
            router.route(WEATHER, tools=tools)  # warm: grammar, assembled memory
            reply = {}
        elif command["kind"] == "route":
            forwards.clear()
            started = time.perf_counter()
            result = router.route(command["query"], tools=tools)
            reply = {"seconds": time.perf_counter() - started, "raw": result.raw,
                     "output_tokens": result.usage.output_tokens, "forwards": len(forwards),
                     "forward_seconds": sum(forwards)}
        elif command["kind"] == "generate":
            ids = router.prompt_ids([{"role": "user", "content": GREETING}], router_instructions=False)
            backbone = router.model
            input_ids = torch.tensor([ids], device=router.device)
            with torch.no_grad():
                started = time.perf_counter()
                output = _backbone_generate(backbone, input_ids, command["tokens"])
            reply = {"seconds": time.perf_counter() - started, "tokens": output}
        elif command["kind"] == "prefill":
            prompt = full_schema_prompt(router, tools)
            started = time.perf_counter()
            prefill(router, prompt)
            reply = {"seconds": time.perf_counter() - started, "prompt_tokens": len(prompt)}
        else:
            raise ValueError(command)
        print(json.dumps(reply), flush=True)


def _backbone_generate(model, input_ids, tokens: int) -> int:
    """Greedy generation of `tokens` tokens by the router's decoder without tools (the backbone's own speed,
    through its KV cache); returns the tokens generated."""
    import torch

    cache = model.new_cache()
    mask = torch.ones_like(input_ids)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    hidden = model.decode(input_ids, mask, positions, None, cache)
    for step in range(tokens):
        token = model.lm_head(hidden[:, -1]).argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        positions = positions[:, -1:] + 1
        hidden = model.decode(token, mask, positions, None, cache)
    return tokens


# ----------------------------------------------------------------------------------------------- the driver
class Worker:
    def __init__(self, name: str, pythonpath: str | None, device: str | None, dtype: str | None):
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        command = [sys.executable, str(Path(__file__).resolve()), "--serve"] + (["--device", device] if device else []) \
            + (["--dtype", dtype] if dtype else [])
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=str(HERE))

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker died (see its stderr above)")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def old_package(ref: str, folder: Path) -> str:
    """An importable copy of `ref`'s package (engine, adapters, training, as installed) under `folder`."""
    checkout = folder / "checkout"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkout), ref], check=True,
                   capture_output=True)
    package = folder / "site" / "toolformer_router"
    shutil.copytree(checkout / "toolformer_router", package)
    for sub in ("training", "adapters"):
        shutil.copytree(checkout / sub, package / sub)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=True)
    return str(folder / "site")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-ref", help="the git ref of the old version (e.g. a commit); required")
    parser.add_argument("--tool-counts", default="5,20,200,1000")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--text-repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the router's, fp32 on the CPU)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.device, args.dtype)
        return
    if not args.old_ref:
        parser.error("--old-ref is required")
    counts = [int(c) for c in args.tool_counts.split(",")]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.old_ref], check=True,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as folder:
        workers = {"old": Worker("old", old_package(args.old_ref, Path(folder)), args.device, args.dtype),
                   "new": Worker("new", None, args.device, args.dtype)}
        rows = []
        for count in counts:
            for worker in workers.values():
                worker.ask(kind="prepare", tools=count)
            row: dict = {"tools": count}
            for label, query, repeats in (("auto", WEATHER, args.repeats), ("text", GREETING, args.text_repeats)):
                times: dict[str, list[float]] = {"old": [], "new": []}
                outputs: dict[str, set[str]] = {"old": set(), "new": set()}
                tokens: dict[str, int] = {}
                host: dict[str, list[float]] = {"old": [], "new": []}
                forwards: dict[str, int] = {}
                for _ in range(repeats):
                    for name, worker in workers.items():
                        reply = worker.ask(kind="route", query=query, tools=count)
                        times[name].append(reply["seconds"])
                        outputs[name].add(reply["raw"])
                        tokens[name], forwards[name] = reply["output_tokens"], reply["forwards"]
                        host[name].append(reply["seconds"] - reply["forward_seconds"])
                for name in workers:
                    stats = percentiles(times[name])
                    row[f"{label}_{name}_p50_ms"], row[f"{label}_{name}_p95_ms"] = stats["p50_ms"], stats["p95_ms"]
                    row[f"{label}_{name}_forwards"] = forwards[name]
                    row[f"{label}_{name}_host_ms_per_forward"] = percentiles(host[name])["p50_ms"] / forwards[name]
                row[f"{label}_speedup_p50"] = row[f"{label}_old_p50_ms"] / row[f"{label}_new_p50_ms"]
                row[f"{label}_same_output"] = outputs["old"] == outputs["new"] and len(outputs["new"]) == 1
                if label == "text":
                    for name in workers:
                        row[f"text_{name}_ms_per_token"] = row[f"text_{name}_p50_ms"] / max(tokens[name], 1)
                    row["text_tokens"] = tokens["new"]
            prefill = workers["new"].ask(kind="prefill", tools=count) if count <= 20 else None
            row["full_schema_prefill_ms"] = 1000 * prefill["seconds"] if prefill else None
            rows.append(row)
            print(f"[{count} tools] auto p50 {row['auto_old_p50_ms']:.0f} -> {row['auto_new_p50_ms']:.0f} ms",
                  file=sys.stderr)
        generate = [workers["new"].ask(kind="generate", tokens=32) for _ in range(args.text_repeats)]
        for worker in workers.values():
            worker.close()
    backbone_ms = min(1000 * g["seconds"] / g["tokens"] for g in generate)
    report = {"machine": machine(), "old": commit, "device": args.device or "default",
              "dtype": args.dtype or "default", "repeats": args.repeats,
              "text_repeats": args.text_repeats, "queries": {"auto": WEATHER, "text": GREETING},
              "backbone_greedy_ms_per_token": backbone_ms, "rows": rows}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    print()
    print_table(rows, ["tools", "auto_old_p50_ms", "auto_new_p50_ms", "auto_old_p95_ms", "auto_new_p95_ms",
                       "auto_speedup_p50", "auto_same_output", "auto_old_forwards", "auto_new_forwards",
                       "auto_old_host_ms_per_forward", "auto_new_host_ms_per_forward", "text_old_p50_ms",
                       "text_new_p50_ms", "text_speedup_p50", "text_new_ms_per_token", "text_same_output",
                       "full_schema_prefill_ms"])
    print(f"backbone greedy generation: {backbone_ms:.1f} ms per token")


if __name__ == "__main__":
    main()
