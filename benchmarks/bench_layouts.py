"""Size and speed of candidate router layouts on the default backbone (the measurement behind the
`RouterConfig` defaults; accuracy needs training and is measured by the training issue).

    python benchmarks/bench_layouts.py [--tools 20] [--repeats 5] [--out FILE]

For each layout: trainable parameters of the new modules, their size at 16 bit, cache bytes per tool at
16 bit, decoder prefill of a 70-token prompt with N tools' memory, and per-token decode time with a KV cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import machine, percentiles, print_table, timed  # noqa: E402

from toolformer_router import RouterConfig  # noqa: E402
from toolformer_router.backbone import load_backbone  # noqa: E402
from toolformer_router.modeling import GistMemory, ToolRouterModel  # noqa: E402

LAYOUTS = {
    "default: x-attn every 3rd layer from 6 (8), 8q/2kv heads": {},
    "x-attn every layer from 6 (24)": {"cross_attention_every": 1},
    "x-attn every 6th layer from 6 (4)": {"cross_attention_every": 6},
    "full-width x-attn (9q/3kv) every 3rd (8)": {"cross_attention_heads": 9, "cross_attention_kv_heads": 3},
    "reference layout: decoder = layers 6-17, x-attn on each (12)": {"decoder_layers": (6, 18),
                                                                      "cross_attention_every": 1},
}


@torch.no_grad()
def measure(name: str, overrides: dict, tools: int, repeats: int) -> dict:
    backbone, _ = load_backbone("default")
    model = ToolRouterModel(backbone, RouterConfig(**overrides)).eval()
    for block in model.cross_attention.values():
        block.gate.fill_(0.1)
    new_params = sum(p.numel() for m in model.new_modules().values() for p in m.parameters())
    schema = torch.randint(100, 40000, (tools, 150))
    memory = model.project_memory(model.encode_tools(schema, torch.ones_like(schema)))
    batch_memory = GistMemory.batch([GistMemory.flatten(memory)], memory[0])
    prompt = torch.randint(100, 40000, (1, 70))
    positions = torch.arange(70)[None]

    def prefill():
        cache = model.new_cache()
        model.lm_head(model.decode(prompt, torch.ones_like(prompt), positions, batch_memory, cache)[:, -1])
        return cache

    def decode_steps(steps: int = 16):
        cache = prefill()
        for i in range(steps):
            token = torch.tensor([[1000 + i]])
            mask = torch.ones(1, 71 + i, dtype=torch.long)
            model.lm_head(model.decode(token, mask, torch.tensor([[70 + i]]), batch_memory, cache)[:, -1])

    prefill_times = timed(prefill, repeats)
    total = timed(decode_steps, repeats)
    per_token = [(t - p) / 16 for t, p in zip(total, prefill_times)]
    per_tool_16bit = (model.config.num_gists * backbone.config.hidden_size + memory[0].numel()) * 2
    return {"layout": name, "cross_attention_layers": len(model.cross_attention), "new_params_M": new_params / 1e6,
            "new_modules_MB_16bit": new_params * 2 / 1e6, "cache_KB_per_tool_16bit": per_tool_16bit / 1e3,
            "prefill_p50_ms": percentiles(prefill_times)["p50_ms"], "decode_ms_per_token": 1000 * sorted(per_token)[len(per_token) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rows = [measure(name, overrides, args.tools, args.repeats) for name, overrides in LAYOUTS.items()]
    report = {"machine": machine(), "tools": args.tools, "repeats": args.repeats, "layouts": rows}
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    print()
    print_table(rows, ["layout", "cross_attention_layers", "new_params_M", "new_modules_MB_16bit",
                       "cache_KB_per_tool_16bit", "prefill_p50_ms", "decode_ms_per_token"])


if __name__ == "__main__":
    main()
