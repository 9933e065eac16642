"""`toolformer-router data prepare`, `train` and `eval`: the training subcommands, registered by the engine's CLI."""

from __future__ import annotations

import argparse
from typing import get_args

import orjson

from .config import StageName


def cmd_prepare(args: argparse.Namespace) -> None:
    from .data import prepare

    counts = prepare(args.out, seed=args.seed, tools_per_example=args.tools_per_example,
                     validation_fraction=args.validation_fraction, no_call_fraction=args.no_call_fraction,
                     synthetic_per_tool=args.synthetic_per_tool, synthetic_parallel=args.synthetic_parallel,
                     composed_validation=args.composed_validation, validation_parallel=args.validation_parallel,
                     validation_split=args.validation_split, validation_agent=args.validation_agent,
                     everyday=args.everyday, validation_everyday=args.validation_everyday)
    print(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode())


def cmd_train(args: argparse.Namespace) -> None:
    from .config import TrainConfig
    from .curriculum import train_from_config

    config = TrainConfig.from_yaml(args.config)
    known = set(get_args(StageName)) | {str(i + 1) for i in range(len(config.stages))}
    unknown = sorted(set(args.stage or ()) - known)
    if unknown:
        raise SystemExit(f"--stage {', '.join(unknown)}: not a stage name or a position 1-{len(config.stages)}")
    if args.output_dir:
        config.output_dir = args.output_dir
    folder = train_from_config(config, stages=args.stage or None, resume=args.resume, init_from=args.init_from)
    print(f"checkpoint: {folder}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import run_eval_command

    run_eval_command(args)


def cmd_calibrate(args: argparse.Namespace) -> None:
    from .calibrate import run_calibrate_command

    run_calibrate_command(args)


def _positive_int(text: str) -> int:
    """A count that must be at least 1 (a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    """`--set`'s KEY=VALUE as (KEY, VALUE); which keys and values are valid is the configuration's to say."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def register(commands: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the `toolformer-router` parser."""
    data = commands.add_parser("data", help="prepare training and evaluation data from BFCL")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser("prepare", help="write the prepared splits and print their counts")
    prepare.set_defaults(handler=cmd_prepare)
    prepare.add_argument("--out", required=True, help="output folder")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--tools-per-example", type=int, default=20)
    prepare.add_argument("--validation-fraction", type=float, default=0.1)
    prepare.add_argument("--no-call-fraction", type=float, default=0.1)
    prepare.add_argument("--synthetic-per-tool", type=int, default=0)
    prepare.add_argument("--synthetic-parallel", type=int, default=0, help="synthetic examples of 2-4 calls to add")
    prepare.add_argument("--composed-validation", type=int, default=100,
                         help="two-call validation examples composed from validation's one-call examples")
    prepare.add_argument("--validation-parallel", type=int, default=100,
                         help="synthetic validation examples of 2-4 calls to validation's tools")
    prepare.add_argument("--validation-split", choices=("example", "tool"), default="example",
                         help="hold out a fraction of each source's examples, or of the called tools (never trained)")
    prepare.add_argument("--validation-agent", type=int, default=300,
                         help="later steps of agent turns (results in, calls left or an answer) over validation")
    prepare.add_argument("--everyday", type=int, default=0,
                         help="agent-style requests over everyday tools to train on (a quarter of the tools held out)")
    prepare.add_argument("--validation-everyday", type=int, default=300,
                         help="agent-style requests over the held-out everyday tools (with --everyday)")

    train = commands.add_parser("train", help="run the training curriculum from a YAML config")
    train.set_defaults(handler=cmd_train)
    train.add_argument("--config", required=True)
    train.add_argument("--stage", action="append", metavar="NAME_OR_POSITION",
                       help="run only these stages (repeatable): a name, e.g. calling, or a position in the config, "
                            "from 1")
    train.add_argument("--resume", action="store_true", help="continue from the last saved state")
    train.add_argument("--output-dir", default=None, help="override the config's output_dir")
    train.add_argument("--init-from", default=None, metavar="CHECKPOINT",
                       help="start from this checkpoint's weights (e.g. with --stage, a recipe's last stages)")

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on BFCL")
    evaluate.set_defaults(handler=cmd_eval)
    evaluate.add_argument("--checkpoint", default="default")
    evaluate.add_argument("--suite", default="bfcl", choices=["bfcl"])
    evaluate.add_argument("--data-dir", default=None, help="prepared data (default: prepared on the fly)")
    evaluate.add_argument("--split", action="append",
                          choices=["validation", "validation_multi", "validation_parallel", "validation_agent",
                                   "validation_everyday", "test"],
                          help="default: test; validation_multi: two-call examples composed from validation's; "
                               "validation_parallel: synthetic lists of 2-4 calls to validation's tools")
    evaluate.add_argument("--tools-per-query", type=int, default=20)
    evaluate.add_argument("--limit", type=int, default=None, help="at most this many examples per category")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--batch-size", type=_positive_int, default=8,
                          help="queries routed together (through aroute); latency is then per request in a batch")
    evaluate.add_argument("--baseline-batch-size", type=_positive_int, default=1,
                          help="baseline prompts generated together, left-padded (1 on a CPU, where padding costs "
                               "more than it saves; 16 or more on a GPU); latency is then each batch's")
    evaluate.add_argument("--device", default=None, help="cpu, cuda, ... for the router and the baselines")
    evaluate.add_argument("--dtype", default=None,
                          help="the router's dtype, e.g. bfloat16 (default: bfloat16 on CUDA, float32 on the CPU)")
    evaluate.add_argument("--set", action="append", type=_key_value, metavar="KEY=VALUE", default=None,
                          help="override a setting of the checkpoint's configuration (a RouterConfig field; "
                               "repeatable, applied in order): VALUE is read as JSON (numbers, true/false, null, "
                               "lists) or else as text, off/none turn an optional setting off; call/no-call "
                               "settings (CallThresholds fields) apply at every tool count")
    evaluate.add_argument("--out", required=True, help="summary JSON; the per-example JSONL is written beside it")
    evaluate.add_argument("--resume", action="store_true",
                          help="reuse the records journaled beside --out by an earlier run of the same setting "
                               "(checkpoint, configuration, tools per query, seed)")
    evaluate.add_argument("--experiments", default="", help="comma list of: order, scaling, hotswap")
    evaluate.add_argument("--scaling-counts", default="1,5,20,50,200,1000")
    evaluate.add_argument(
        "--baselines", default="",
        help="comma list of: full-schema (the backbone prompted with as many of the active tools' schemas as fit its "
             "context), minilm-top3 (the 3 tools closest to the request under all-MiniLM-L6-v2, then the same prompt)")

    calibrate = commands.add_parser(
        "calibrate", help="choose call_bias, min_argument_grounding, min_request_coverage and min_tool_relevance "
             "(the call/no-call thresholds) on validation")
    calibrate.set_defaults(handler=cmd_calibrate)
    calibrate.add_argument("--checkpoint", default="default")
    calibrate.add_argument("--data-dir", default=None, help="prepared data (default: prepared on the fly)")
    calibrate.add_argument("--tools-per-query", default="20",
                           help="active tools per query, or a comma list (e.g. 20,200): one setting chosen "
                                "per count")
    calibrate.add_argument("--limit", type=int, default=None, help="at most this many examples per category")
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--batch-size", type=int, default=8)
    calibrate.add_argument("--device", default=None)
    calibrate.add_argument("--max-fnr", type=float, default=0.15, help="the false-negative rate allowed")
    calibrate.add_argument("--pass-call-bias", type=float, default=0.0,
                           help="decode at this call_bias: it and every lower bias are scored with AST")
    calibrate.add_argument("--grounding-veto", choices=["on", "off"], default="on",
                           help="also sweep min_argument_grounding (off: leave it unset)")
    calibrate.add_argument("--coverage-veto", choices=["on", "off"], default="on",
                           help="also sweep min_request_coverage (off: leave it unset)")
    calibrate.add_argument("--relevance-veto", choices=["on", "off"], default="on",
                           help="also sweep min_tool_relevance (off: leave it unset)")
    calibrate.add_argument("--records", action="append", default=None,
                           help="re-sweep the .examples.jsonl of an earlier calibrate pass at the same "
                                "--pass-call-bias instead of decoding again (once per --tools-per-query count, in "
                                "order); the untrained support fields (grounding, coverage, relevance) are "
                                "recomputed with the current code")
    calibrate.add_argument("--out", required=True, help="the sweep as JSON (the pass's examples beside it, .jsonl)")
    calibrate.add_argument("--write", action="store_true", help="store the chosen thresholds in the checkpoint's config.json")
