"""Engine speed and size: gist encoding, cache bytes per tool, route latency against the number of active
tools (warm cache; the call's tool is forced so every N decodes the same call, hence without the selector,
whose own cost — `rank_tools`: one encoder pass over the query + the tools' vectors — is its own column, as is
the tool-relevance veto's: one MiniLM pass over the query against the called tool's cached vector, which an
"auto" route that calls adds when `min_tool_relevance` is set), and full-schema prompting of the same query on
the same backbone, in the same run. The "auto" columns time the product path on the same query: `route` with the
checkpoint's own config (selector, clause plan, call decision and vetoes, grammar-constrained decoding).

    python benchmarks/bench_engine.py [--checkpoint default] [--tool-counts 5,20,50,200,1000] [--out FILE]

Prints a JSON document and a table. Tools are unique BFCL function docs (speed only; nothing is trained).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import orjson
import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import bfcl_tools, machine, percentiles, print_table, timed  # noqa: E402

from toolformer_router import ToolRouter, ToolRouterError  # noqa: E402

QUERY = "Find me the weather forecast for Berlin for the next three days, in celsius."


def usable_catalog(router: ToolRouter, limit: int) -> list:
    tools = []
    for raw in bfcl_tools():
        try:
            (tool,) = router.prepare_tools([raw])
            router.tool_text(tool)
        except ToolRouterError:
            continue
        if tool.name not in {t.name for t in tools}:
            tools.append(tool)
        if len(tools) == limit:
            break
    return tools


def full_schema_prompt(router: ToolRouter, tools: list) -> list[int]:
    """The same query with every tool's schema pasted into the system prompt (the usual practice)."""
    schemas = "\n".join(orjson.dumps(t.to_openai()).decode() for t in tools)
    system = ("You can call these tools. Answer with a JSON list of {\"name\", \"arguments\"} objects.\n"
              f"<tools>\n{schemas}\n</tools>")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": QUERY}]
    ids = router.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@torch.no_grad()
def prefill(router: ToolRouter, ids: list[int], memory=None) -> None:
    input_ids = torch.tensor([ids], device=router.device)
    mask = torch.ones_like(input_ids)
    hidden = router.model.decode(input_ids, mask, torch.arange(len(ids), device=router.device)[None], memory)
    router.model.lm_head(hidden[:, -1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--tool-counts", default="5,20,50,200,1000")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    counts = [int(c) for c in args.tool_counts.split(",")]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router = ToolRouter.from_pretrained(args.checkpoint, device=args.device, disk_cache=False)
    catalog = usable_catalog(router, max(counts))
    report: dict = {"machine": machine(), "checkpoint": args.checkpoint, "dtype": str(router.model.lm_head.weight.dtype),
                    "torch_threads": torch.get_num_threads(), "query": QUERY}

    # --- gist encoding: one tool per call, and batches of 32
    single = []
    router.tool_memories(catalog[20:21])  # warm-up
    for tool in catalog[:20]:
        router.gist_cache.clear_memory()
        started = time.perf_counter()
        router.tool_memories([tool])
        single.append(time.perf_counter() - started)
    router.gist_cache.clear_memory()
    batch_tools = catalog[:256]
    started = time.perf_counter()
    router.tool_memories(batch_tools, batch_size=32)
    batched_total = time.perf_counter() - started
    report["encode"] = {"single_tool": percentiles(single),
                        "batched_32": {"tools": len(batch_tools), "total_s": batched_total,
                                       "per_tool_ms": 1000 * batched_total / len(batch_tools)}}

    # --- cache bytes per tool
    (entry,), _, _ = router.tool_memories(catalog[:1])
    report["cache_bytes_per_tool"] = {
        "memory": entry.nbytes, "memory_at_16_bit": entry.nbytes * 2 // entry.gists.element_size(),
        "gists_only_at_16_bit": entry.gists.numel() * 2, "disk_payload": len(entry.serialize()),
        "layout": {"gists": list(entry.gists.shape), "cross_attention_kv": list(entry.memory.shape)},
    }

    # --- route latency against active tools, beside full-schema prefill of the same query
    rows = []
    context = router.max_context
    for count in counts:
        tools = catalog[:count]
        started = time.perf_counter()
        router.tool_memories(tools, batch_size=32)
        encode_s = time.perf_counter() - started
        grammar = timed(lambda: router.grammar.matcher(tools, "required", False), repeats=3, warmup=0)
        forced_tool = catalog[0].name  # the same call shape at every N, so latencies compare

        def route(budget: int):
            return router.route(QUERY, tools=tools, tool_choice=forced_tool, parallel_tool_calls=False,
                                max_new_tokens=budget)

        results = []
        route_times = timed(lambda: results.append(route(args.max_new_tokens)), repeats=args.repeats)
        auto_results = []
        auto_times = timed(lambda: auto_results.append(router.route(QUERY, tools=tools)), repeats=args.repeats)
        first_token = timed(lambda: route(1), repeats=args.repeats)
        selector = timed(lambda: router.rank_tools(QUERY, tools), repeats=args.repeats)
        relevance = timed(lambda: router.relevance.score(QUERY, tools[:1]), repeats=args.repeats)
        prompt = full_schema_prompt(router, tools)
        row = {"tools": count, "encode_new_s": encode_s, "grammar_build_ms": 1000 * min(grammar),
               "route_p50_ms": percentiles(route_times)["p50_ms"], "route_p95_ms": percentiles(route_times)["p95_ms"],
               "output_tokens": sum(r.usage.output_tokens for r in results) / len(results),
               "sampled_tokens": sum(r.usage.output_tokens - r.usage.forced_tokens for r in results) / len(results),
               "first_token_p50_ms": percentiles(first_token)["p50_ms"],
               "auto_p50_ms": percentiles(auto_times)["p50_ms"], "auto_p95_ms": percentiles(auto_times)["p95_ms"],
               "auto_calls": sorted({",".join(c.name for c in r.calls) or "(text)" for r in auto_results}),
               "selector_p50_ms": percentiles(selector)["p50_ms"],
               "relevance_p50_ms": percentiles(relevance)["p50_ms"],
               "router_input_tokens": results[-1].usage.input_tokens,
               "full_schema_prompt_tokens": len(prompt)}
        if len(prompt) < context:
            prefill_times = timed(lambda: prefill(router, prompt), repeats=max(2, args.repeats // 4))
            row["full_schema_prefill_p50_ms"] = percentiles(prefill_times)["p50_ms"]
            row["first_token_over_prefill"] = row["first_token_p50_ms"] / row["full_schema_prefill_p50_ms"]
            row["route_over_prefill"] = row["route_p50_ms"] / row["full_schema_prefill_p50_ms"]
        else:
            row["full_schema_prefill_p50_ms"] = f"does not fit ({len(prompt)} > {context})"
        rows.append(row)
        print(f"[{count} tools] route p50 {row['route_p50_ms']:.0f} ms", file=sys.stderr)
    report["route"] = rows
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    print()
    print_table(rows, ["tools", "route_p50_ms", "route_p95_ms", "auto_p50_ms", "auto_p95_ms", "output_tokens",
                       "sampled_tokens", "first_token_p50_ms", "selector_p50_ms", "relevance_p50_ms",
                       "grammar_build_ms", "router_input_tokens", "full_schema_prompt_tokens",
                       "full_schema_prefill_p50_ms", "first_token_over_prefill", "route_over_prefill"])


if __name__ == "__main__":
    main()
