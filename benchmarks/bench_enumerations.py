"""How often `cover_enumerations` would keep a list going, on the training side's gold calls (train + validation
BFCL live examples of a prepared folder; synthetic examples left out): on one-call examples every firing is a
spurious extra call; on multi-call examples it should fire after each call but the last.

The rule reads the gold calls as if the decoder had written them, so this measures the rule, not the model.
Nothing here reads the BFCL test categories.

    python benchmarks/bench_enumerations.py [--data-dir data/prepared] [--out FILE]

Prints a JSON document and a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import print_table

from toolformer_router.enumerations import enumeration_unfinished, find_enumerations
from toolformer_router.training.data import load_prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    examples = [e for split in ("train", "validation") for e in load_prepared(args.data_dir, split)
                if e.calls and e.source.startswith("bfcl:")]
    one_call = {"n": 0, "with_enumeration": 0, "spurious": []}
    multi_call = {"n": 0, "with_enumeration": 0, "right_length": 0, "too_short": 0, "too_long": 0, "rows": []}
    for example in examples:
        query = next(m["content"] for m in reversed(example.messages) if m["role"] == "user")
        enumerations = find_enumerations(query)
        calls = [call.model_dump(include={"name", "arguments"}) for call in example.calls]
        goes_on = [enumeration_unfinished(calls[:k], enumerations) for k in range(1, len(calls) + 1)]
        counts = one_call if len(calls) == 1 else multi_call
        counts["n"] += 1
        counts["with_enumeration"] += bool(enumerations)
        if len(calls) == 1:
            if goes_on[0]:
                one_call["spurious"].append({"query": query[:160], "enumerations": enumerations})
        elif enumerations:
            # the list the rule alone would allow: it may not end where goes_on is True
            verdict = ("too_long" if goes_on[-1] else "right_length" if all(goes_on[:-1]) else "too_short")
            multi_call[verdict] += 1
            multi_call["rows"].append({"query": query[:160], "enumerations": enumerations, "goes_on": goes_on})
    report = {"data_dir": args.data_dir, "one_call": one_call, "multi_call": multi_call}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print_table([
        {"examples": "one call", "n": one_call["n"], "with an enumeration": one_call["with_enumeration"],
         "what the rule does": f"{len(one_call['spurious'])} spurious extra calls"},
        {"examples": "several calls", "n": multi_call["n"], "with an enumeration": multi_call["with_enumeration"],
         "what the rule does": f"{multi_call['too_long']} too long; {multi_call['right_length']} kept to "
                                  f"length, {multi_call['too_short']} left to the decoder"},
    ], ["examples", "n", "with an enumeration", "what the rule does"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
