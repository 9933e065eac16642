"""What accepting a catalog of tools costs: `usable_pool` (normalise, grammar check, schema length) per router.

    python benchmarks/bench_tool_checks.py [--data-dir DIR] [--routers 3] [--out FILE]

Every evaluation and calibration run starts with it over the distractor catalog (`data prepare`'s
catalog_train.jsonl and catalog_test.jsonl). The first router of a process pays for normalisation and the
grammar check; later routers reuse them (shared per process) and pay only for counting schema tokens, which
each router does once per schema in batched tokenizer calls. Prints a JSON document and a table; writes the
JSON to `--out` (default benchmarks/results/tool_checks_cpu.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import orjson

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import machine, print_table  # noqa: E402

from toolformer_router import ToolRouter  # noqa: E402
from toolformer_router.training.data import prepare  # noqa: E402
from toolformer_router.training.evaluate import usable_pool  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=".toolformer-eval-data", help="prepared data (made if missing)")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--routers", type=int, default=3, help="routers built one after another in this process")
    parser.add_argument("--out", default="benchmarks/results/tool_checks_cpu.json")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "catalog_train.jsonl").is_file():
        prepare(data_dir)
    pool = [orjson.loads(line) for name in ("catalog_train.jsonl", "catalog_test.jsonl")
            for line in (data_dir / name).read_bytes().splitlines() if line.strip()]
    rows = []
    for index in range(args.routers):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            router = ToolRouter.from_pretrained(args.checkpoint, disk_cache=False, preload_relevance=False)
        started = time.perf_counter()
        usable = usable_pool(router, pool)
        rows.append({"router": index + 1, "tools": len(pool), "usable": len(usable),
                     "seconds": time.perf_counter() - started,
                     "max_schema_tokens": router.config.max_schema_tokens})
    report = {"machine": machine(), "checkpoint": args.checkpoint, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print_table(rows, ["router", "tools", "usable", "seconds", "max_schema_tokens"])


if __name__ == "__main__":
    main()
