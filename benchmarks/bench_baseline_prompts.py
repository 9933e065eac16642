"""Which system prompt the full-schema baseline gets, measured on the training side's validation split only.

The baseline prompts SmolLM2-135M-Instruct with the active tools' full schemas. Its chat template has no
`tools` support, so the schemas go into a system prompt: ours (`TOOL_PROMPT`: one schema per line, "answer with
only a JSON list of calls") or the SmolLM2 family's own (`SMOLLM2_TOOL_PROMPT`, the system turn of Ollama's
`smollm2` template, answers in `<tool_call>[...]</tool_call>`). Both are run in the evaluation harness on the
same validation call examples (at most `--limit` per category) and active tools; the one that makes more valid
calls is the fairer baseline. The BFCL test categories are not read.

    python benchmarks/bench_baseline_prompts.py [--limit 5] [--tools-per-query 20] [--out FILE]

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

from toolformer_router.training.baselines import SMOLLM2_TOOL_PROMPT, TOOL_PROMPT, FullSchemaPrompting  # noqa: E402
from toolformer_router.training.evaluate import (  # noqa: E402
    BASELINE_MAX_NEW_TOKENS,
    _split_data,
    baseline_batch_predictor,
    evaluate,
    limit_per_category,
    summarize,
)

PROMPTS = {"ours": TOOL_PROMPT, "smollm2": SMOLLM2_TOOL_PROMPT}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/prepared_synthetic")
    parser.add_argument("--limit", type=int, default=5, help="at most this many call examples per category")
    parser.add_argument("--tools-per-query", type=int, default=20)
    parser.add_argument("--prompts", default=",".join(PROMPTS), help=f"comma list of: {', '.join(PROMPTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    examples, pool = _split_data(Path(args.data_dir), "validation", args.seed)
    examples = limit_per_category([e for e in examples if e.calls], args.limit, args.seed)
    prompting = FullSchemaPrompting.from_default(max_new_tokens=BASELINE_MAX_NEW_TOKENS)
    rows, outputs = [], {}
    for name in args.prompts.split(","):
        prompting.tool_prompt = PROMPTS[name]
        started = time.perf_counter()
        records = evaluate(None, examples, tools_per_query=args.tools_per_query, pool=pool,
                           seed=args.seed, desc=f"prompt {name}",
                           predict_many=baseline_batch_predictor(prompting), batch_size=1)
        summary = summarize(records)
        rows.append({"prompt": name, "n": len(records), "calls made": sum(bool(r["calls"]) for r in records),
                     "valid calls": sum(bool(r["calls"]) and r["valid"] for r in records),
                     **{metric: round(summary["overall"][metric]["value"], 3) for metric in ("AST", "TSA", "FNR")},
                     "mean prompt tokens": round(summary["prompt_tokens_mean"]),
                     "wall s": round(time.perf_counter() - started)})
        outputs[name] = [{"id": r["id"], "output": r["output"][:200]} for r in records]
    document = {"machine": machine(), "tools_per_query": args.tools_per_query, "limit_per_category": args.limit,
                "max_new_tokens": BASELINE_MAX_NEW_TOKENS, "rows": rows, "outputs": outputs}
    print(json.dumps(document, indent=2))
    print_table(rows, list(rows[0]))
    if args.out:
        Path(args.out).write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
