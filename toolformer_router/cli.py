"""`toolformer-router` command line: `route` one query over a tools file, `demo` a few example queries, `serve` an
OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson
from .errors import ToolRouterError

DEMO_TOOLS = Path(__file__).parent / "demo_tools.json"
DEMO_QUERIES = [
    "What's the weather like in Lisbon today, in celsius?",
    "Email anna@example.com that the report is ready.",
    "Convert 250 US dollars to euros.",
    "Put a team lunch in my calendar on 2026-12-03 at 12:30.",
    "Hi! How are you?",
]


def _load_router(args: argparse.Namespace):
    from .router import ToolRouter

    return ToolRouter.from_pretrained(args.checkpoint, device=args.device, disk_cache=not args.no_disk_cache)


def _read_tools(path: str) -> list:
    try:
        tools = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise SystemExit(f"error: cannot read tools from {path}: {error}") from None
    if not isinstance(tools, list):
        raise SystemExit(f"error: {path} must hold a JSON list of tools")
    return tools


def cmd_route(args: argparse.Namespace) -> None:
    router = _load_router(args)
    result = router.route(args.query, tools=_read_tools(args.tools), tool_choice=args.tool_choice,
                          max_new_tokens=args.max_new_tokens)
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")


def cmd_demo(args: argparse.Namespace) -> None:
    router = _load_router(args)
    router.add_tools(_read_tools(args.tools or DEMO_TOOLS), show_progress=True)
    for query in DEMO_QUERIES:
        started = time.perf_counter()
        result = router.route(query, max_new_tokens=args.max_new_tokens)
        elapsed = time.perf_counter() - started
        outcome = ", ".join(f"{c.name}({orjson.dumps(c.arguments).decode()})" for c in result.calls)
        print(f"> {query}\n  {outcome or 'no call: ' + repr(result.text)}   [{elapsed * 1000:.0f} ms]")


def cmd_serve(args: argparse.Namespace) -> None:
    try:
        from .adapters.server import serve
    except ImportError as error:
        raise SystemExit(f"error: serve needs the server extra ({error}): "
                         "pip install 'toolformer-router[server]'") from None
    limits = {"max_pending": args.max_pending, "read_timeout_s": args.read_timeout, "keep_alive_s": args.keep_alive,
              "max_cached_tools": args.max_cached_tools}
    serve(args.checkpoint, host=args.host, port=args.port, api_key=args.api_key, device=args.device, dtype=args.dtype,
          **{name: value for name, value in limits.items() if value is not None})  # unset: the server's defaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toolformer-router", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, help_text in (("route", cmd_route, "route one query and print the RouteResult as JSON"),
                                     ("demo", cmd_demo, "route a few example queries over example tools")):
        command = commands.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        command.add_argument("--checkpoint", default="default", help='checkpoint folder or "default"')
        command.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
        command.add_argument("--max-new-tokens", type=int, default=None)
        command.add_argument("--no-disk-cache", action="store_true", help="keep gists in memory only")
    route = commands.choices["route"]
    route.add_argument("--tools", required=True, help="JSON file with a list of tools (OpenAI, bare or MCP shape)")
    route.add_argument("--tool-choice", default=None, help='"auto", "required", "none" or a tool name')
    route.add_argument("query")
    commands.choices["demo"].add_argument("--tools", default=None, help="tools file (default: built-in examples)")
    serve = commands.add_parser("serve", help="serve an OpenAI-compatible API (/v1/chat/completions, /v1/models)")
    serve.set_defaults(handler=cmd_serve)
    serve.add_argument("--checkpoint", default="default", help='checkpoint folder or "default"')
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("TOOLFORMER_ROUTER_API_KEY"),
                       help="require 'Authorization: Bearer KEY' (default: $TOOLFORMER_ROUTER_API_KEY, else none)")
    serve.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    serve.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: bfloat16 on CUDA, else float32)")
    serve.add_argument("--max-pending", type=int, default=None, metavar="N",
                       help="most completions waiting or being answered at once; past it, an immediate 429 with "
                            "Retry-After (default: 64, two batches of 32)")
    serve.add_argument("--read-timeout", type=float, default=None, metavar="SECONDS",
                       help="time a client has to send a request's headers (else the connection is closed), then as "
                            "long for its body (else 408) (default: 30)")
    serve.add_argument("--keep-alive", type=int, default=None, metavar="SECONDS",
                       help="close a connection idle this long between requests (default: 5)")
    serve.add_argument("--max-cached-tools", type=int, default=None, metavar="N",
                       help="most tools whose encodings are kept in memory, least recently used leave first "
                            "(default: 10,000)")
    _register_plugins(commands)
    return parser


def _register_plugins(commands: argparse._SubParsersAction) -> None:
    """Subcommands of the installed subpackages (training's `data`, `train`, `eval`): the engine itself
    never depends on them, it only lets them register."""
    import importlib
    import importlib.util

    for module in ("toolformer_router.training.cli",):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(commands)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except ToolRouterError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
