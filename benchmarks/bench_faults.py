"""Faults: a damaged or busy gist cache never fails a route, and bad input or a bad checkpoint fails fast with a
typed error, after which the router still routes.

    python benchmarks/bench_faults.py [--checkpoint default] [--out FILE]

Three kinds of case, each run once, serially:

- cache: the on-disk gist cache (`ToolRouter.from_pretrained(..., cache_path=...)`, in a temporary folder, never the
  user's cache) is damaged before a router opens it: header bytes overwritten, the file truncated, a file of garbage,
  the file read-only (0o444, also in a 0o555 folder), another process holding its write lock (`BEGIN IMMEDIATE` on a
  WAL file, `BEGIN EXCLUSIVE` on a rollback-journal file), an older table layout, a row with a valid checksum but the
  wrong shape, a row of NaN values. Passes when both routes of the ten tools of benchmarks/bench_agents.py succeed
  with the calls a clean cache gives, a warning was logged, nothing was raised, and the case took at most
  `CACHE_SLACK_S` longer than the slower of the two cases without a fault, an empty and a filled cache (so a
  held lock must not block for long).
- input: bad tools, messages and budgets given to one loaded router (recursive `$ref`s, 10,000 properties, NaN/inf in
  a schema, `add_tools(None)`, malformed `tool_calls`, bad `max_new_tokens`, too long a query, too many tools, empty
  or duplicate names). Passes when a `ToolRouterError` subclass is raised within `INPUT_LIMIT_S`, its message is
  sensible where the case says what that means, and the router then routes as before (same calls, tools unchanged).
- checkpoint: a copy of the checkpoint edited (NaN weights, a null `backbone_signature`, ...). Passes when loading
  it raises a `CheckpointError` and the loaded router still routes.

As root, the read-only cases drop the capabilities that let root write through file modes (CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH) for the case's thread, so the file modes apply as they do to any other user.
Prints a JSON document and a table; writes the JSON to `--out` (default benchmarks/results/faults_cpu.json);
exits 1 when any case fails.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, print_table

from toolformer_router import ToolRouter
from toolformer_router.errors import CheckpointError, ToolRouterError
from toolformer_router.gist_cache import ToolMemory
from toolformer_router.router import checkpoint_folder

INPUT_LIMIT_S = 1.0
"""A bad input must be refused within this many seconds."""
CACHE_SLACK_S = 2.0
"""A cache fault may cost at most this many seconds over the same case without a fault."""
QUERY = "What's the weather in Paris?"
ANSWER_BUDGET = 0
"""`max_text_tokens` of every route: decide only, so a case costs one decoding pass."""
MakeRouter = Callable[[Path], ToolRouter]
"""A router whose on-disk gist cache is the given file."""


@dataclass
class Outcome:
    """What one case did."""

    case: str
    kind: str
    outcome: str = ""
    seconds: float = 0.0
    still_routes: bool = False
    passed: bool = False
    detail: str = ""
    warnings: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {"case": self.case, "kind": self.kind, "outcome": self.outcome, "seconds": round(self.seconds, 3),
                "still routes": "yes" if self.still_routes else "no", "pass": "yes" if self.passed else "no"}


def calls_of(result: Any) -> list[tuple[str, str]]:
    return [(call.name, json.dumps(call.arguments, sort_keys=True)) for call in result.calls or []]


def route(router: ToolRouter, tools: list[dict]) -> list[tuple[str, str]]:
    return calls_of(router.route(QUERY, tools, max_text_tokens=ANSWER_BUDGET))


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Warnings (and worse) the package logs meanwhile."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname}: {record.getMessage()}")

    logger = logging.getLogger("toolformer_router")
    handler, level = Collect(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ----------------------------------------------------------------------------------- cache faults
class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@contextmanager
def file_modes_apply() -> Iterator[None]:
    """Root's file-mode overrides (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) off in this thread's effective set, so a
    0o444 file is read-only to it; nothing to do for another user. Capabilities are per thread on Linux."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = data[0].effective
    data[0].effective &= ~((1 << 1) | (1 << 2))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


def _rewrite_rows(path: Path, change: Callable[[ToolMemory], ToolMemory]) -> None:
    """Replace every stored entry by `change(entry)`, with a checksum that matches the new payload."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT schema_hash, fingerprint, payload FROM gist_entries").fetchall()
        for schema_hash, fingerprint, payload in rows:
            new = change(ToolMemory.deserialize(payload)).serialize()
            db.execute("UPDATE gist_entries SET payload = ?, checksum = ? WHERE schema_hash = ? AND fingerprint = ?",
                       (new, hashlib.sha256(new).hexdigest(), schema_hash, fingerprint))
    db.close()


def _with_nan(entry: ToolMemory) -> ToolMemory:
    memory = entry.memory.clone()
    memory.view(-1)[:: max(1, memory.numel() // 7)] = float("nan")
    return ToolMemory(entry.gists, memory)


def _garbage(path: Path) -> None:
    path.write_bytes(torch.randint(0, 256, (256 * 1024,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())


def _damage_bytes(path: Path, start: int, data: bytes) -> None:
    content = bytearray(path.read_bytes())
    content[start : start + len(data)] = data
    path.write_bytes(bytes(content))


def _older_layout(path: Path) -> None:
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:  # the layout before checksums: one column fewer
        db.execute("CREATE TABLE gist_entries (schema_hash TEXT, fingerprint TEXT, payload BLOB, created REAL, "
                   "used REAL, PRIMARY KEY (schema_hash, fingerprint))")
        db.execute("INSERT INTO gist_entries VALUES ('a', 'fp', x'00', 0, 0)")
    db.close()


def _read_only(folder_too: bool) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.chmod(0o444)
        if folder_too:
            path.parent.chmod(0o555)
    return damage


_HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute(f"PRAGMA journal_mode={sys.argv[2]}")
db.execute(f"BEGIN {sys.argv[3]}")
print("held", flush=True)
time.sleep(600)
"""


@dataclass
class CacheFault:
    """A damage done to a gist cache file before a router opens it."""

    damage: Callable[[Path], None] | None = None
    populated: bool = True
    """The file first holds the ten tools' entries (from a router on a clean cache)."""
    lock: tuple[str, str] | None = None
    """(journal mode, BEGIN mode) of a lock another process holds while the router runs."""
    read_only: bool = False
    """Run with file modes applying (as root too)."""

    @property
    def baseline(self) -> bool:
        """No fault at all: the time the faults are compared with."""
        return self.damage is None and self.lock is None and not self.read_only


CACHE_FAULTS: dict[str, CacheFault] = {
    "no fault, empty cache": CacheFault(populated=False),
    "no fault, filled cache": CacheFault(),
    "damaged header bytes": CacheFault(lambda p: _damage_bytes(p, 0, b"not a database!!")),
    "truncated file": CacheFault(lambda p: os.truncate(p, p.stat().st_size // 3)),
    "file of garbage": CacheFault(_garbage, populated=False),
    "read-only file (0o444)": CacheFault(_read_only(False), read_only=True),
    "read-only file and folder (0o444, 0o555)": CacheFault(_read_only(True), read_only=True),
    "write lock held (BEGIN IMMEDIATE, WAL)": CacheFault(lock=("wal", "IMMEDIATE")),
    "lock held (BEGIN EXCLUSIVE, rollback journal)": CacheFault(lock=("delete", "EXCLUSIVE")),
    "older table layout (no checksum column)": CacheFault(_older_layout, populated=False),
    "row of the wrong shape, valid checksum": CacheFault(
        lambda p: _rewrite_rows(p, lambda e: ToolMemory(e.gists[:-1].clone(), e.memory[..., :-1, :].clone()))),
    "row with NaN values, valid checksum": CacheFault(lambda p: _rewrite_rows(p, _with_nan)),
}


@contextmanager
def lock_held(path: Path, journal: str, mode: str) -> Iterator[None]:
    """Another process holds `BEGIN <mode>` on the file (in `journal` mode) until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path), journal, mode], stdout=subprocess.PIPE,
                              text=True)
    try:
        if holder.stdout.readline().strip() != "held":
            raise RuntimeError("the lock holder did not start")
        yield
    finally:
        holder.terminate()
        holder.wait()


def run_cache_case(name: str, fault: CacheFault, make_router: MakeRouter, tools: list[dict],
                   expected: list[tuple[str, str]], folder: Path, clean_s: float | None = None) -> Outcome:
    """Damage a cache file as `fault` says, open a router on it and route the tools twice."""
    outcome = Outcome(name, "cache")
    folder.mkdir(parents=True)
    path = folder / "gists.sqlite"
    if fault.populated:
        populate = make_router(path)
        route(populate, tools)
        populate.gist_cache.close()
    if fault.damage is not None:
        fault.damage(path)
    raised: BaseException | None = None
    routes: list[list[tuple[str, str]]] = []
    with captured_warnings() as warnings, (lock_held(path, *fault.lock) if fault.lock else _nothing()), \
            (file_modes_apply() if fault.read_only else _nothing()):
        started = time.perf_counter()
        try:
            router = make_router(path)
            for _ in range(2):
                routes.append(route(router, tools))
        except BaseException as error:  # noqa: BLE001 - any error is this case's failure
            raised = error
        outcome.seconds = time.perf_counter() - started
    folder.chmod(0o755)
    outcome.warnings = warnings
    outcome.still_routes = raised is None and routes == [expected, expected]
    warned = bool(warnings) or fault.baseline
    in_time = clean_s is None or outcome.seconds <= clean_s + CACHE_SLACK_S
    if raised is not None:
        outcome.outcome = f"{'typed' if isinstance(raised, ToolRouterError) else 'untyped'} error " \
                          f"{type(raised).__name__}"
        outcome.detail = str(raised)[:300]
    else:
        outcome.outcome = "routed+warning" if warnings else "routed, no warning"
        if routes != [expected, expected]:
            outcome.detail = f"calls {routes}, expected {expected}"
    if not in_time:
        outcome.detail += f" took {outcome.seconds:.2f} s, without a fault {clean_s:.2f} s"
    outcome.passed = raised is None and outcome.still_routes and warned and in_time
    return outcome


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# ----------------------------------------------------------------------------------- bad input
def _tool(name: str, parameters: dict, description: str = "A tool.") -> dict:
    return {"name": name, "description": description, "parameters": parameters}


def _object(properties: dict, required: list[str] | None = None, **extra: Any) -> dict:
    return {"type": "object", "properties": properties, "required": required or [], **extra}


def _messages(tool_calls: Any) -> list[dict]:
    return [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": tool_calls},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 20}"},
            {"role": "user", "content": QUERY}]


def _call(function: dict) -> list[dict]:
    return [{"id": "call_1", "type": "function", "function": function}]


@dataclass
class BadInput:
    """A call that must raise a `ToolRouterError` (`expect`, where given, names the subclass)."""

    act: Callable[[ToolRouter, list[dict]], Any]
    expect: type[ToolRouterError] = ToolRouterError
    sensible: Callable[[str], bool] | None = None
    """Whether the error's message reads right (None: any message)."""


def _budget_message(message: str) -> bool:
    """Names the parameter, and states no negative limit (the issue saw 'at most -999991808 fit')."""
    return "max_new_tokens" in message and re.search(r"-\d{3,}", message) is None


BAD_INPUTS: dict[str, BadInput] = {
    "$ref a -> a (required)": BadInput(lambda r, t: r.add_tools([_tool("rec_a", _object(
        {"node": {"$ref": "#/$defs/A"}}, ["node"],
        **{"$defs": {"A": _object({"next": {"$ref": "#/$defs/A"}}, ["next"])}}))])),
    "$ref a -> b -> a (required)": BadInput(lambda r, t: r.add_tools([_tool("rec_ab", _object(
        {"node": {"$ref": "#/$defs/A"}}, ["node"],
        **{"$defs": {"A": _object({"b": {"$ref": "#/$defs/B"}}, ["b"]),
                     "B": _object({"a": {"$ref": "#/$defs/A"}}, ["a"])}}))])),
    "$ref '#': endless required chain": BadInput(lambda r, t: r.add_tools([_tool("rec_root", _object(
        {"child": {"$ref": "#"}}, ["child"]))])),
    "$ref through a non-empty array": BadInput(lambda r, t: r.add_tools([_tool("rec_items", _object(
        {"nodes": {"type": "array", "items": {"$ref": "#"}, "minItems": 1}}, ["nodes"]))])),
    "$ref to a missing definition": BadInput(lambda r, t: r.add_tools([_tool("dangling", _object(
        {"x": {"$ref": "#/$defs/Missing"}}, ["x"]))])),
    "10,000 properties": BadInput(lambda r, t: r.add_tools([_tool("wide", _object(
        {f"p{i}": {"type": "string", "description": f"field {i}"} for i in range(10_000)}))])),
    "NaN in a schema": BadInput(lambda r, t: r.add_tools([_tool("nan_min", _object(
        {"x": {"type": "number", "minimum": float("nan")}}, ["x"]))])),
    "inf in a schema": BadInput(lambda r, t: r.add_tools([_tool("inf_max", _object(
        {"x": {"type": "number", "maximum": float("inf")}}, ["x"]))])),
    "add_tools(None)": BadInput(lambda r, t: r.add_tools(None)),
    "tool_calls: function name missing": BadInput(lambda r, t: r.route(_messages(_call({"arguments": "{}"})), t)),
    "tool_calls: arguments not JSON": BadInput(lambda r, t: r.route(_messages(_call(
        {"name": "get_weather", "arguments": "{city: Paris"})), t)),
    "tool_calls: a dict, not a list": BadInput(lambda r, t: r.route(_messages(_call(
        {"name": "get_weather", "arguments": "{}"})[0]), t), sensible=lambda message: "list" in message),
    "tool_calls: a number": BadInput(lambda r, t: r.route(_messages(5), t)),
    "tool_calls: function is a string": BadInput(lambda r, t: r.route(_messages(
        [{"id": "call_1", "type": "function", "function": "get_weather"}]), t)),
    "tool_calls: arguments with NaN": BadInput(lambda r, t: r.route(_messages(_call(
        {"name": "get_weather", "arguments": {"city": float("nan")}})), t)),
    "tool_calls: arguments with a non-string key": BadInput(lambda r, t: r.route(_messages(_call(
        {"name": "get_weather", "arguments": {1: "Paris"}})), t)),
    "max_new_tokens=0": BadInput(lambda r, t: r.route(QUERY, t, max_new_tokens=0)),
    "max_new_tokens=-5": BadInput(lambda r, t: r.route(QUERY, t, max_new_tokens=-5)),
    "max_new_tokens='abc'": BadInput(lambda r, t: r.route(QUERY, t, max_new_tokens="abc")),
    "max_new_tokens=10**9": BadInput(lambda r, t: r.route(QUERY, t, max_new_tokens=10**9), sensible=_budget_message),
    "max_text_tokens=-1": BadInput(lambda r, t: r.route(QUERY, t, max_text_tokens=-1)),
    "query over max_query_tokens": BadInput(lambda r, t: r.route("weather " * 3_000, t)),
    "query of 2 MB": BadInput(lambda r, t: r.route("weather in Paris " * 120_000, t)),
    "max_tools + 1 tools": BadInput(lambda r, t: r.route(QUERY, [_tool(f"tool_{i}", _object({}))
                                                              for i in range(r.config.max_tools + 1)])),
    "empty tool name": BadInput(lambda r, t: r.add_tools([_tool("", _object({}))])),
    "duplicate tool names in one request": BadInput(lambda r, t: r.route(QUERY, [*t, t[0]])),
    "tool_choice names an unknown tool": BadInput(lambda r, t: r.route(QUERY, t, tool_choice="no_such_tool")),
    "tool_choice: function is a string": BadInput(lambda r, t: r.route(QUERY, t, tool_choice={
        "type": "function", "function": "get_weather"})),
    "stop: a number": BadInput(lambda r, t: r.route(QUERY, t, stop=5)),
}


def run_input_case(name: str, bad: BadInput, router: ToolRouter, tools: list[dict],
                   expected: list[tuple[str, str]]) -> Outcome:
    """Give the router the bad input, then route normally."""
    outcome = Outcome(name, "input")
    registered = [tool.name for tool in router.tools]
    raised: BaseException | None = None
    started = time.perf_counter()
    try:
        bad.act(router, tools)
    except Exception as error:  # noqa: BLE001 - which type is what this case checks
        raised = error
    outcome.seconds = time.perf_counter() - started
    outcome.still_routes = _still_routes(router, tools, expected, registered, outcome)
    if raised is None:
        outcome.outcome = "accepted"
        return outcome
    typed = isinstance(raised, bad.expect)
    outcome.outcome = f"{'typed' if isinstance(raised, ToolRouterError) else 'untyped'} error {type(raised).__name__}"
    outcome.detail = (str(raised)[:300] + " " + outcome.detail).strip()
    sensible = bad.sensible is None or bad.sensible(str(raised))
    if not sensible:
        outcome.detail = f"message not sensible: {outcome.detail}"
    outcome.passed = typed and sensible and outcome.seconds <= INPUT_LIMIT_S and outcome.still_routes
    return outcome


def _still_routes(router: ToolRouter, tools: list[dict], expected: list[tuple[str, str]], registered: list[str],
                  outcome: Outcome) -> bool:
    try:
        calls = route(router, tools)
    except Exception as error:  # noqa: BLE001
        outcome.detail += f" then the normal route raised {type(error).__name__}: {error}"
        return False
    now = [tool.name for tool in router.tools]
    if now != registered:
        outcome.detail += f" registered tools changed: {registered} -> {now}"
    if calls != expected:
        outcome.detail += f" then routed {calls}, expected {expected}"
    return calls == expected and now == registered


# ----------------------------------------------------------------------------------- bad checkpoints
def _nan_weights(folder: Path) -> None:
    tensors = load_file(folder / "router.safetensors")
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, folder / "router.safetensors", metadata={"format": "pt"})


def _edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
    return edit


BAD_CHECKPOINTS: dict[str, Callable[[Path], None]] = {
    "checkpoint with NaN weights": _nan_weights,
    "checkpoint with a null backbone_signature": _edit_config(lambda c: c.update(backbone_signature=None)),
    "checkpoint of another backbone (hidden_size)": _edit_config(
        lambda c: c["backbone_signature"].update(hidden_size=c["backbone_signature"]["hidden_size"] * 2)),
    "checkpoint with a truncated router.safetensors": lambda f: os.truncate(
        f / "router.safetensors", (f / "router.safetensors").stat().st_size // 2),
    "checkpoint with config.json not JSON": lambda f: (f / "config.json").write_text("{\"backbone\": "),
}


def run_checkpoint_case(name: str, edit: Callable[[Path], None], checkpoint: str, router: ToolRouter,
                        tools: list[dict], expected: list[tuple[str, str]], folder: Path) -> Outcome:
    """Load an edited copy of `checkpoint`; then route with the router already loaded."""
    outcome = Outcome(name, "checkpoint")
    shutil.copytree(checkpoint_folder(checkpoint), folder)
    edit(folder)
    raised: BaseException | None = None
    started = time.perf_counter()
    try:
        ToolRouter.from_pretrained(folder, disk_cache=False)
    except Exception as error:  # noqa: BLE001
        raised = error
    outcome.seconds = time.perf_counter() - started
    outcome.still_routes = _still_routes(router, tools, expected, [t.name for t in router.tools], outcome)
    if raised is None:
        outcome.outcome = "loaded"
        return outcome
    outcome.outcome = f"{'typed' if isinstance(raised, ToolRouterError) else 'untyped'} error {type(raised).__name__}"
    outcome.detail = (str(raised)[:300] + " " + outcome.detail).strip()
    outcome.passed = isinstance(raised, CheckpointError) and outcome.still_routes
    return outcome


# ----------------------------------------------------------------------------------- the run
def run_all(make_router: MakeRouter, checkpoint: str | None, tools: list[dict], workdir: Path,
            cases: set[str] | None = None) -> list[Outcome]:
    """Every case (or those named in `cases`), serially, in a fresh folder under `workdir` each;
    `checkpoint` None skips the checkpoint cases."""
    wanted = (lambda name: cases is None or name in cases)
    router = make_router(workdir / "reference" / "gists.sqlite")
    expected = route(router, tools)
    outcomes: list[Outcome] = []
    clean_s = None  # the slower of the cases without a fault (they come first)
    for i, (name, fault) in enumerate(CACHE_FAULTS.items()):
        if wanted(name) or fault.baseline:
            outcome = run_cache_case(name, fault, make_router, tools, expected, workdir / f"cache_{i}",
                                     None if fault.baseline else clean_s)
            clean_s = max(clean_s or 0.0, outcome.seconds) if fault.baseline else clean_s
            if wanted(name):
                outcomes.append(outcome)
    for name, bad in BAD_INPUTS.items():
        if wanted(name):
            outcomes.append(run_input_case(name, bad, router, tools, expected))
    if checkpoint is not None:
        for i, (name, edit) in enumerate(BAD_CHECKPOINTS.items()):
            if wanted(name):
                outcomes.append(run_checkpoint_case(name, edit, checkpoint, router, tools, expected,
                                                    workdir / f"checkpoint_{i}"))
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "faults_cpu.json")
    args = parser.parse_args()
    from bench_agents import TOOLS

    tools = [tool.openai()["function"] for tool in TOOLS.values()]
    with tempfile.TemporaryDirectory(prefix="bench_faults_") as tmp:
        os.chmod(tmp, 0o755)
        started = time.perf_counter()
        outcomes = run_all(lambda path: ToolRouter.from_pretrained(args.checkpoint, cache_path=path),
                           args.checkpoint, tools, Path(tmp))
        total = time.perf_counter() - started
    rows = [o.row() for o in outcomes]
    document = {"machine": machine(), "checkpoint": args.checkpoint, "query": QUERY, "tools": len(tools),
                "input_limit_s": INPUT_LIMIT_S, "cache_slack_s": CACHE_SLACK_S, "seconds": round(total, 1),
                "passed": sum(o.passed for o in outcomes), "cases": len(outcomes),
                "records": [{**o.row(), "detail": o.detail, "warnings": o.warnings[:5]} for o in outcomes]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2))
    print(json.dumps(document, indent=2))
    print_table(rows, list(rows[0]))
    print(f"{document['passed']}/{len(outcomes)} cases pass in {total:.0f} s")
    sys.exit(0 if all(o.passed for o in outcomes) else 1)


if __name__ == "__main__":
    main()
