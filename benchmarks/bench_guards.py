"""Cost of the decoding guards (loop guard + closing reserve): the same forced call routed with them on and off,
interleaved so that both see the same machine state.

    python benchmarks/bench_guards.py [--checkpoint default] [--tools 20] [--repeats 40] [--out FILE]

Prints a JSON document and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

sys.path.insert(0, __import__("os").path.dirname(__file__))
from bench_engine import QUERY, usable_catalog  # noqa: E402
from common import machine, percentiles, print_table  # noqa: E402

from toolformer_router import ToolRouter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--tools", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router = ToolRouter.from_pretrained(args.checkpoint, disk_cache=False)
    tools = usable_catalog(router, args.tools)
    router.add_tools(tools)
    config = router.config
    guards = {"on": (config.loop_guard_min_span, config.closing_reserve_tokens), "off": (0, 0)}  # 0 turns each off
    times: dict[str, list[float]] = {"on": [], "off": []}
    for repeat in range(args.repeats + 1):  # the first round warms the caches
        for mode, (min_span, reserve) in guards.items():
            config.loop_guard_min_span, config.closing_reserve_tokens = min_span, reserve
            started = time.perf_counter()
            result = router.route(QUERY, tool_choice=tools[0].name, max_new_tokens=args.max_new_tokens)
            if repeat:
                times[mode].append(time.perf_counter() - started)
    rows = [{"guards": mode, "tools": args.tools, "output_tokens": result.usage.output_tokens, **percentiles(t)}
            for mode, t in times.items()]
    document = {"machine": machine(), "checkpoint": args.checkpoint, "rows": rows}
    print(json.dumps(document, indent=2))
    print_table(rows, ["guards", "tools", "output_tokens", "n", "p50_ms", "p95_ms", "mean_ms"])
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(document, handle, indent=2)


if __name__ == "__main__":
    main()
