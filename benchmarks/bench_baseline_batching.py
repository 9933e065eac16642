"""Baseline prompts generated in left-padded batches against one at a time: the same outputs, and how much faster.

`FullSchemaPrompting.predict_batch` pads a batch's prompts on the left and generates them together; greedy
decoding should give each request what it gets alone. This runs a baseline (`full-schema` or `minilm-top3`,
as `toolformer-router eval --baselines` builds it) on the same validation examples and active tools one at a
time and in batches of `--batch-size`, and reports how many outputs agree and the seconds per example of each.
The BFCL test categories are not read.

    python benchmarks/bench_baseline_batching.py [--baseline minilm-top3] [--limit 4] [--batch-size 8] [--out FILE]

Prints a JSON document and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import machine, print_table  # noqa: E402

from toolformer_router.training.evaluate import (  # noqa: E402
    _baseline,
    _split_data,
    active_tools,
    limit_per_category,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", choices=["full-schema", "minilm-top3"], default="minilm-top3")
    parser.add_argument("--data-dir", default="data/prepared_synthetic")
    parser.add_argument("--limit", type=int, default=4, help="at most this many validation examples per category")
    parser.add_argument("--tools-per-query", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    examples, pool = _split_data(Path(args.data_dir), "validation", args.seed)
    examples = limit_per_category(examples, args.limit, args.seed)
    requests = [(e.messages, active_tools(e, args.tools_per_query, pool, args.seed)) for e in examples]
    baseline = _baseline(args.baseline)
    baseline.predict(*requests[0])  # warm-up: weights, MiniLM, first-call allocations

    started = time.perf_counter()
    alone = [baseline.predict(messages, tools) for messages, tools in requests]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    together = [prediction for start in range(0, len(requests), args.batch_size)
                for prediction in baseline.predict_batch(requests[start : start + args.batch_size])]
    batched_s = time.perf_counter() - started

    same = sum(a.raw == b.raw and a.calls == b.calls for a, b in zip(alone, together))
    rows = [{"mode": "one at a time", "n": len(requests), "s per example": alone_s / len(requests),
             "same output": same},
            {"mode": f"batches of {args.batch_size}", "n": len(requests), "s per example": batched_s / len(requests),
             "same output": same}]
    document = {"machine": machine(), "baseline": args.baseline, "tools_per_query": args.tools_per_query,
                "batch_size": args.batch_size, "n": len(requests), "same_output": same,
                "mean_prompt_tokens": sum(p.prompt_tokens for p in alone) / len(alone),
                "seconds_per_example": {"alone": alone_s / len(requests), "batched": batched_s / len(requests)},
                "speedup": alone_s / batched_s,
                "differ": [{"id": e.id, "alone": a.raw[:120], "batched": b.raw[:120]}
                           for e, a, b in zip(examples, alone, together) if a.raw != b.raw]}
    print(json.dumps(document, indent=2))
    print_table(rows, list(rows[0]))
    if args.out:
        Path(args.out).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
