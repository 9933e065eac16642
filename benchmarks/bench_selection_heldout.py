"""Tool selection on tools the selector never saw, measured on the training side only.

A seeded 30 % of the training-side tool names is held out. A fresh `ToolSelector` is trained the way the
curriculum's `selection` stage trains it (`CurriculumModel.selection_loss`, every tool of the batch a candidate, on
the checkpoint's fixed gists) on the training examples whose calls name no held-out tool, with the held-out
tools removed from their lists. It is then measured on the training-side BFCL examples (train + validation)
whose calls all name held-out tools, each among its own tools plus held-out distractors up to 20 and 200:
recall@1 of the first call's tool under score = selector logit + w x BM25 (`LexicalMatcher`), for each w, and,
at the config's `lexical_weight`, how often every tool the example calls is among the k best scores (k of
`--top-k`; for a multi-call example all its tools must be). This is how `lexical_weight` is chosen; the BFCL test
categories are not read.

    python benchmarks/bench_selection_heldout.py [--steps 1500] [--weights 0,1,2,4,8] [--top-k 1,2,3,5] [--out FILE]

Prints a JSON document and a table. Caveat: the gists (and the decoder) were trained with these tools in the
data; only the selector has not seen them.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import machine, print_table  # noqa: E402

from toolformer_router import ToolRouter, ToolRouterError  # noqa: E402
from toolformer_router.router import selection_text  # noqa: E402
from toolformer_router.training.config import TrainConfig  # noqa: E402
from toolformer_router.training.curriculum import Curriculum  # noqa: E402
from toolformer_router.training.data import load_prepared  # noqa: E402
from toolformer_router.training.evaluate import _split_data, active_tools, usable_pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def held_out_split(router: ToolRouter, data_dir: Path, fraction: float, seed: int):
    """(training examples without the held-out tools, evaluation examples calling only held-out tools,
    the held-out distractor pool)."""
    train = load_prepared(data_dir, "train")
    validation, pool = _split_data(data_dir, "validation", seed)
    pool = usable_pool(router, pool)
    names = sorted({tool["name"] for tool in pool})
    held_out = set(random.Random(f"{seed}:held_out_tools").sample(names, round(fraction * len(names))))
    kept = [e.model_copy(update={"tools": [t for t in e.tools if t["name"] not in held_out]})
            for e in train if not any(call.name in held_out for call in e.calls)]
    evaluation = [e for e in validation + [e for e in train if e.source.startswith("bfcl:")]
                  if e.calls and all(call.name in held_out for call in e.calls)]
    return kept, evaluation, [tool for tool in pool if tool["name"] in held_out]


def train_selector(curriculum: Curriculum, examples: list, *, steps: int, batch_size: int, lr: float, warmup: int,
                   rng: random.Random, candidates: str = "batch") -> None:
    """Train the selector alone on batches drawn from `examples` (AdamW, linear warm-up, cosine decay), as the
    curriculum's `selection` stage does."""
    module = curriculum.module
    optimizer = torch.optim.AdamW(module.model.selector.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup))
                                                 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    bank = curriculum.bank
    bank.precompute([bank.tool_key(t) for e in examples for t in e.tools]
                    + [bank.text_key(e.query_text) for e in examples])
    with torch.enable_grad():
        for _ in range(steps):
            batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
            loss = module.selection_loss(batch, candidates)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--held-out-fraction", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weights", default="0,0.5,1,2,4,8")
    parser.add_argument("--top-k", default="1,2,3,5", help="k of 'every called tool among the k best'")
    parser.add_argument("--tool-counts", default="20,200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most this many evaluation examples")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    router = ToolRouter.from_pretrained(args.checkpoint, disk_cache=False)
    config = TrainConfig.from_yaml(args.config)
    kept, evaluation, pool = held_out_split(router, Path(config.data_dir), args.held_out_fraction, args.seed)
    evaluation = evaluation[: args.limit]
    curriculum = Curriculum(config, router, kept)
    curriculum.module.model.init_new_modules(args.seed, names=["selector"])  # a fresh selector
    train_selector(curriculum, [e for e in curriculum.examples if e.gold_tool_indexes], steps=args.steps,
                   batch_size=args.batch_size, lr=args.lr, warmup=20, rng=random.Random(args.seed))
    router.model.eval()
    shipped_weight = config.router.get("lexical_weight", 0.0)
    router.config.lexical_weight = 0.0
    weights = [float(w) for w in args.weights.split(",")]
    top_ks = [int(k) for k in args.top_k.split(",")]
    rows, top_k_rows = [], []
    for count in (int(c) for c in args.tool_counts.split(",")):
        hits = {w: 0 for w in weights}
        hits["bm25"] = 0
        n = 0
        within = {(k, multi): 0 for k in top_ks for multi in (False, True)}
        n_multi = 0
        for example in evaluation:
            try:
                tools = router.prepare_tools(active_tools(example, count, pool, args.seed))
                learned = dict(router.rank_tools(example.messages, tools))
            except ToolRouterError:
                continue
            selector = torch.tensor([learned[t.name] for t in tools])
            lexical = router.lexical.scores(selection_text(example.messages), tools)
            gold = example.calls[0].name
            n += 1
            for w in weights:
                hits[w] += tools[int((selector + w * lexical).argmax())].name == gold
            hits["bm25"] += tools[int(lexical.argmax())].name == gold
            order = (selector + shipped_weight * lexical).argsort(descending=True, stable=True)
            ranked = [tools[i].name for i in order.tolist()]
            multi = len({call.name for call in example.calls}) > 1
            n_multi += multi
            for k in top_ks:
                within[k, multi] += {call.name for call in example.calls} <= set(ranked[:k])
        rows.append({"tools": count, "n": n, **{f"w={w:g}": round(hits[w] / n, 3) for w in weights},
                     "bm25 alone": round(hits["bm25"] / n, 3)})
        for multi, examples in ((False, n - n_multi), (True, n_multi)):
            if examples:
                top_k_rows.append({"tools": count, "calls": "several tools" if multi else "one tool", "n": examples,
                                   **{f"k={k}": round(within[k, multi] / examples, 3) for k in top_ks}})
    result = {"machine": machine(), "held_out_tools": len({t["name"] for t in pool}), "training_examples": len(kept),
              "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
              "wall_s": round(time.perf_counter() - started, 1), "recall_at_1": rows,
              "lexical_weight": shipped_weight, "all_called_tools_in_top_k": top_k_rows}
    print(json.dumps(result, indent=2))
    print_table(rows, list(rows[0]))
    print_table(top_k_rows, list(top_k_rows[0]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
