"""Training data: the unified example format, BFCL loaders, the split policy, distractors and `prepare`.

Split policy (docs: design.md, "Split policy"): training and model selection use only BFCL's `live_*`
categories (plus synthetic data); the non-live categories are the test set. Every tool schema of the test
side, by hash or by name, is kept out of the training catalog, the distractor pool and the training
examples. Validation is carved from the training side, stratified by category.

    toolformer-router data prepare --out data/prepared --seed 0
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from toolformer_router.errors import InvalidToolError
from toolformer_router.grammar import render_calls
from toolformer_router.schema import Tool, canonical_json, normalize_tool

TRAIN_CATEGORIES = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance")
TEST_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
SPLITS = ("train", "validation", "validation_multi", "validation_parallel", "validation_agent", "validation_everyday",
          "test", "irrelevance")
"""Named views: training examples; held-out queries (on held-out tools with `validation_split="tool"`), composed
two-call and synthetic 2-4-call lists, later steps of agent turns, requests to held-out everyday tools; the test
categories (unseen tools); the no-call
examples of the test side."""
NO_CALL_SOURCE = "no_call"
"""Source of the no-call examples made by removing the gold tools from a call example (`make_no_call`)."""
FOREIGN_NO_CALL_SOURCE = "no_call_foreign"
"""Source of the no-call examples made by giving a request another example's tool (`make_foreign_no_call`)."""
COMPOSED_SOURCES = ("composed_same_tool", "composed_two_tools")
"""Sources of the composed multi-call validation examples (`compose_multi_call`)."""

_ROLES = {"system", "user", "assistant", "tool"}
_OMIT = object()


class DataError(ValueError):
    """A data file or example is malformed; the message names the file and line."""


class GoldCall(BaseModel):
    """One gold call: a concrete value per argument (the training target) and, for BFCL, the allowed values."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any]
    allowed: dict[str, list[Any]] | None = None
    """BFCL `possible_answer` lists, kept for scoring (`""` in a list: the parameter may be omitted)."""


class Example(BaseModel):
    """One example in the unified format; `calls == []` means the right answer is "no call"."""

    model_config = ConfigDict(extra="forbid")

    id: str
    source: str
    tools: list[dict[str, Any]]
    """Active tools `{"name", "description", "parameters"}`, parameters in strict JSON Schema."""
    messages: list[dict[str, Any]]
    calls: list[GoldCall]
    absent_tools: list[str] = []
    """Tool names that must not be among its tools (a "no call" example made by removing its gold tools):
    distractors never bring them back."""

    @field_validator("tools")
    @classmethod
    def _check_tools(cls, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, tool in enumerate(tools):
            if not (isinstance(tool.get("name"), str) and isinstance(tool.get("description"), str)
                    and isinstance(tool.get("parameters"), dict)):
                raise ValueError(f"tool {i} must have a string 'name', a string 'description' and dict 'parameters'")
        names = [tool["name"] for tool in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tool names: {sorted(n for n, c in Counter(names).items() if c > 1)}")
        return tools

    @field_validator("messages")
    @classmethod
    def _check_messages(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, message in enumerate(messages):
            if message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
                raise ValueError(f"message {i} must have a role in {sorted(_ROLES)} and a string 'content'")
        if not any(message["role"] == "user" for message in messages):
            raise ValueError("at least one user message is required")
        return messages

    @model_validator(mode="after")
    def _check_call_names(self) -> Example:
        names = {tool["name"] for tool in self.tools}
        for call in self.calls:
            if call.name not in names:
                raise ValueError(f"call names {call.name!r}, which is not among the example's tools")
        if names & set(self.absent_tools):
            raise ValueError(f"tools {sorted(names & set(self.absent_tools))} are both active and absent")
        return self

    def target_text(self) -> str:
        """The exact output text the router's grammar accepts for the gold calls ("" for no call)."""
        if not self.calls:
            return ""
        called = {call.name for call in self.calls}
        tools = [_normalize(tool) for tool in self.tools if tool["name"] in called]
        return render_calls([(call.name, call.arguments) for call in self.calls], tools)


# ---------------------------------------------------------------- tools


_NORMALIZED: dict[bytes, Tool] = {}


def _normalize(raw: dict[str, Any]) -> Tool:
    """`normalize_tool`, memoised on the raw definition (property order included).

    A tool's own unified form maps back to the same `Tool`, so re-reading prepared data never
    normalises a schema twice (and keeps its hash).
    """
    key = orjson.dumps(raw)
    tool = _NORMALIZED.get(key)
    if tool is None:
        tool = _NORMALIZED[key] = normalize_tool(raw)
        _NORMALIZED.setdefault(orjson.dumps(tool.to_openai()["function"]), tool)
    return tool


def tool_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """A tool in the unified format: `{"name", "description", "parameters"}` with strict JSON Schema."""
    return _normalize(raw).to_openai()["function"]


def schema_hash(tool: dict[str, Any]) -> str:
    """`Tool.schema_hash` of a tool already in the unified format (no second normalisation)."""
    return hashlib.sha256(canonical_json(tool["name"], tool["description"], tool["parameters"])).hexdigest()


@functools.lru_cache(maxsize=None)
def _validator(parameters: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(parameters))


def _is_valid(value: Any, schema: dict[str, Any]) -> bool:
    return _validator(orjson.dumps(schema)).is_valid(value)


def call_errors(example: Example) -> list[str]:
    """Why the example's gold calls do not validate against their tools' schemas ([] when they all do)."""
    tools = {tool["name"]: tool for tool in example.tools}
    errors = []
    for i, call in enumerate(example.calls):
        validator = _validator(orjson.dumps(_normalize(tools[call.name]).parameters))
        for error in validator.iter_errors(call.arguments):
            path = "/".join(str(p) for p in error.absolute_path) or "<arguments>"
            errors.append(f"call {i} ({call.name}) {path}: {error.message}")
    return errors


# ---------------------------------------------------------------- BFCL


def bfcl_data_dir() -> Path:
    """The `data` folder of the installed `bfcl-eval` distribution (located, never imported)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("bfcl-eval is not installed: pip install --no-deps bfcl-eval")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def bfcl_functions(category: str) -> Iterator[dict[str, Any]]:
    """Every raw BFCL function doc of a category, in file order (duplicates included)."""
    for row in _read_lines(bfcl_data_dir() / f"BFCL_v4_{category}.json"):
        yield from row["function"]


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    """A BFCL scalar converted to the schema's type where the conversion is exact."""
    declared = schema.get("type")
    types = set(declared) if isinstance(declared, list) else {declared}
    if isinstance(value, bool):
        return str(value) if "string" in types and "boolean" not in types else value
    if isinstance(value, float) and value.is_integer() and "integer" in types and "number" not in types:
        return int(value)
    if isinstance(value, (int, float)) and "string" in types and not types & {"integer", "number"}:
        return str(value)
    return value


def _is_allowed_form(value: Any) -> bool:
    """A BFCL answer dict is `{key: [allowed values]}` at every depth; anything else is a literal."""
    return isinstance(value, dict) and all(isinstance(v, list) for v in value.values())


def _resolve(value: Any, schema: dict[str, Any]) -> Any:
    """One concrete value from a BFCL answer value (nested dicts in allowed-list form, lists, scalars)."""
    if _is_allowed_form(value):
        return _resolve_object(value, schema)
    if isinstance(value, (list, tuple)):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [_resolve(v, items) for v in value]
    return _coerce(value, schema)


def _choose(options: list[Any], schema: dict[str, Any] | None) -> Any:
    """The first allowed value that validates (after coercion) against `schema`.

    `""` (may be omitted) and `None` (BFCL's "default") are omission markers: with no valid concrete value
    the parameter is then omitted; otherwise the first concrete value is kept even though it is invalid,
    so that the example fails validation and is counted, never silently repaired.
    """
    concrete = [_resolve(o, schema or {}) for o in options if o is not None and o != ""]
    for value in concrete:
        if schema is not None and _is_valid(value, schema):
            return value
    if len(concrete) < len(options) or not concrete:
        return _OMIT
    return concrete[0]


def _resolve_object(allowed: dict[str, list[Any]], schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    extra = schema.get("additionalProperties", {})
    extra = extra if isinstance(extra, dict) else ({} if extra is not False else None)
    resolved = {}
    for key, options in allowed.items():
        value = _choose(options, properties.get(key, extra) if properties is not None else extra)
        if value is not _OMIT:
            resolved[key] = value
    return resolved


def gold_arguments(allowed: dict[str, list[Any]], tool: Tool) -> dict[str, Any]:
    """Concrete training arguments from BFCL allowed values: per parameter the first allowed value
    that is not `""` and validates once coerced to the schema type; omittable parameters without one are left out."""
    return _resolve_object(allowed, tool.parameters)


def load_bfcl(category: str, stats: Counter[str] | None = None) -> list[Example]:
    """The examples of one BFCL category in the unified format.

    Examples with a tool that `normalize_tool` rejects are left out, counted in `stats` under
    `dropped/invalid_tool/<category>`. Examples whose gold calls do not validate after coercion are left
    out of training-side categories (`dropped/invalid_gold_call/<category>`) but kept in test categories,
    so the benchmark stays whole, and counted there (`test_gold_invalid/<category>`).
    """
    data = bfcl_data_dir()
    answers_path = data / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {row["id"]: row["ground_truth"] for row in _read_lines(answers_path)} if answers_path.is_file() else {}
    stats = Counter() if stats is None else stats
    examples = []
    for row in _read_lines(data / f"BFCL_v4_{category}.json"):
        try:
            tools = [_normalize(raw) for raw in row["function"]]
        except InvalidToolError:
            stats[f"dropped/invalid_tool/{category}"] += 1
            continue
        by_name = {tool.name: tool for tool in tools}
        calls = []
        for answer in answers.get(row["id"], []):
            ((name, allowed),) = answer.items()
            arguments = gold_arguments(allowed, by_name[name]) if name in by_name else {}
            calls.append(GoldCall(name=name, arguments=arguments, allowed=allowed))
        try:
            example = Example(
                id=row["id"], source=f"bfcl:{category}", tools=[t.to_openai()["function"] for t in tools],
                messages=row["question"][0], calls=calls,
            )
        except ValidationError:
            stats[f"dropped/invalid_example/{category}"] += 1
            continue
        if call_errors(example):
            if category not in TEST_CATEGORIES:
                stats[f"dropped/invalid_gold_call/{category}"] += 1
                continue
            stats[f"test_gold_invalid/{category}"] += 1
        examples.append(example)
    return examples


def load_jsonl(path: str | Path, *, check_calls: bool = True) -> list[Example]:
    """Examples in the unified format, one JSON object per line; `DataError` names the first bad line.

    Every line must parse and its tools must normalise; with `check_calls`, its gold calls must validate.
    """
    path = Path(path)
    examples = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                example = Example.model_validate_json(line)
                for tool in example.tools:
                    _normalize(tool)
                errors = call_errors(example) if check_calls else []
            except (ValidationError, InvalidToolError) as error:
                raise DataError(f"{path}, line {number}: {error}") from None
            if errors:
                raise DataError(f"{path}, line {number}: gold call does not validate: {errors[0]}")
            examples.append(example)
    return examples


# ---------------------------------------------------------------- catalog, distractors, no-call


def build_catalog(raw_tools: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Unique tools by schema hash, in the unified format, sorted by hash (invalid definitions skipped)."""
    catalog = {}
    for raw in raw_tools:
        try:
            tool = _normalize(raw)
        except InvalidToolError:
            continue
        catalog.setdefault(tool.schema_hash, tool.to_openai()["function"])
    return dict(sorted(catalog.items()))


def pad_with_distractors(
    example: Example,
    catalog: Sequence[dict[str, Any]],
    target_count: int = 20,
    rng: random.Random | None = None,
) -> Example:
    """Add catalog tools until the example has `target_count` tools (never two with one name, never one of
    its `absent_tools`), then shuffle the tool order. `rng` defaults to `random.Random(0)`."""
    rng = rng or random.Random(0)
    tools = list(example.tools)
    taken = {tool["name"] for tool in tools} | set(example.absent_tools)
    tried: set[int] = set()
    while len(tools) < target_count and len(tried) < len(catalog):
        index = rng.randrange(len(catalog))
        if index in tried:
            continue
        tried.add(index)
        if catalog[index]["name"] not in taken:
            taken.add(catalog[index]["name"])
            tools.append(catalog[index])
    if len(tools) < target_count:
        raise ValueError(f"the catalog has too few distinct names to give {example.id!r} {target_count} tools")
    rng.shuffle(tools)
    return example.model_copy(update={"tools": tools})


def make_no_call(
    example: Example, catalog: Sequence[dict[str, Any]], target_count: int = 20, rng: random.Random | None = None
) -> Example:
    """A "no call" example from a call example: its gold tools removed (and kept out of the distractors
    by name: `absent_tools`), padded back to `target_count` tools, `calls=[]`."""
    gold = sorted({call.name for call in example.calls})
    stripped = example.model_copy(update={
        "id": f"{example.id}:{NO_CALL_SOURCE}", "source": NO_CALL_SOURCE, "calls": [], "absent_tools": gold,
        "tools": [tool for tool in example.tools if tool["name"] not in gold],
    })
    return pad_with_distractors(stripped, catalog, target_count, rng)


def make_foreign_no_call(example: Example, donors: Sequence[Example], rng: random.Random) -> Example:
    """A "no call" example built the way BFCL's irrelevance category is: the request of `example` with one
    gold tool of another example (a `donors` member that shares no tool name with it) instead of its own
    tools, which become `absent_tools` (so that distractor padding never brings them back); `calls=[]`."""
    own = sorted({tool["name"] for tool in example.tools} | {call.name for call in example.calls})
    gold_tools = [tool for donor in donors for tool in donor.tools
                  if tool["name"] in {call.name for call in donor.calls} and tool["name"] not in own]
    if not gold_tools:
        raise ValueError(f"no donor has a gold tool outside the tools of {example.id!r}")
    return example.model_copy(update={
        "id": f"{example.id}:{FOREIGN_NO_CALL_SOURCE}", "source": FOREIGN_NO_CALL_SOURCE, "calls": [],
        "absent_tools": own, "tools": [rng.choice(gold_tools)],
    })


def _join_requests(first: str, second: str) -> str:
    """Two user requests as one message: "<first> Also, <second>" (the second's capital lowered where it starts
    an ordinary word)."""
    if second[:1].isupper() and second[1:2].islower():
        second = second[0].lower() + second[1:]
    return f"{first.rstrip()} Also, {second}"


def _tools_agree(first: Example, second: Example) -> bool:
    """True when the two examples' tools of one name have one schema (their union is a valid tool set)."""
    schemas = {tool["name"]: schema_hash(tool) for tool in first.tools}
    return all(schemas.get(tool["name"], schema_hash(tool)) == schema_hash(tool) for tool in second.tools)


def compose_multi_call(examples: Sequence[Example], count: int, rng: random.Random) -> list[Example]:
    """Up to `count` two-call examples, each two one-call examples' user requests in one message, their tools
    together and both calls as gold: half of them two calls of one tool with other arguments (source
    `composed_same_tool`, BFCL's "parallel" shape), half calls of two tools (`composed_two_tools`, "parallel
    multiple"). Only examples whose conversation is a single user message and whose tools of one name agree
    are paired; each example is used once per kind."""
    single = [e for e in examples if len(e.calls) == 1 and [m["role"] for m in e.messages] == ["user"]]
    by_tool: dict[str, list[Example]] = defaultdict(list)
    for example in single:
        by_tool[example.calls[0].name].append(example)
    same = []
    for group in by_tool.values():
        free = list(group)
        while free:
            first = free.pop(0)
            partner = next((e for e in free if _tools_agree(first, e)
                            and e.calls[0].arguments != first.calls[0].arguments), None)
            if partner is not None:
                free.remove(partner)
                same.append((first, partner))
    shuffled = rng.sample(single, len(single))
    mixed = [(a, b) for a, b in zip(shuffled[::2], shuffled[1::2])
             if a.calls[0].name != b.calls[0].name and _tools_agree(a, b)]
    pairs = ([(COMPOSED_SOURCES[0], a, b) for a, b in rng.sample(same, min(len(same), count // 2))]
             + [(COMPOSED_SOURCES[1], a, b) for a, b in rng.sample(mixed, min(len(mixed), count - count // 2))])
    composed = []
    for source, a, b in pairs:
        names = {tool["name"] for tool in a.tools}
        composed.append(Example(
            id=f"{a.id}+{b.id}", source=source, calls=[*a.calls, *b.calls],
            tools=[*a.tools, *(tool for tool in b.tools if tool["name"] not in names)],
            messages=[{"role": "user", "content": _join_requests(a.messages[0]["content"], b.messages[0]["content"])}],
        ))
    return composed


def split_by_tool(
    examples: Sequence[Example], fraction: float, rng: random.Random
) -> tuple[list[Example], list[Example], set[str]]:
    """(train, validation, held-out tool names): tool names that gold calls name are held out, in random order
    and with every name called in one example with them, until the examples that call them are `fraction` of
    the call examples; validation holds those examples (and
    the no-call examples with a held-out tool among their tools), training the examples where no held-out tool
    appears at all. Examples with a held-out tool that they do not call are in neither: no validation tool is
    ever seen in training."""
    called_with: dict[str, set[str]] = defaultdict(set)  # names called in one example are held out together
    for example in examples:
        for call in example.calls:
            called_with[call.name].update(c.name for c in example.calls)
    wanted = fraction * sum(1 for example in examples if example.calls)
    held_out: set[str] = set()
    for name in rng.sample(sorted(called_with), len(called_with)):
        if sum(1 for e in examples if {c.name for c in e.calls} & held_out) >= wanted:
            break
        group, frontier = {name}, [name]
        while frontier:
            for other in called_with[frontier.pop()] - group:
                group.add(other)
                frontier.append(other)
        held_out |= group
    train, validation = [], []
    for example in examples:
        tools = {tool["name"] for tool in example.tools}
        called = {call.name for call in example.calls}
        if called & held_out or (not called and tools & held_out):
            validation.append(example)
        elif not tools & held_out:
            train.append(example)
    return train, validation, held_out


def split_validation(
    examples: Sequence[Example], fraction: float, rng: random.Random
) -> tuple[list[Example], list[Example]]:
    """(train, validation): `fraction` of each source's examples, chosen by id, go to validation."""
    by_source: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_source[example.source].append(example)
    held_out: set[str] = set()
    for source in sorted(by_source):
        ids = sorted(example.id for example in by_source[source])
        held_out.update(rng.sample(ids, round(fraction * len(ids))))
    return [e for e in examples if e.id not in held_out], [e for e in examples if e.id in held_out]


# ---------------------------------------------------------------- prepare


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")


def prepare(
    out_dir: str | Path,
    *,
    seed: int = 0,
    tools_per_example: int = 20,
    validation_fraction: float = 0.1,
    no_call_fraction: float = 0.1,
    synthetic_per_tool: int = 0,
    synthetic_parallel: int = 0,
    composed_validation: int = 100,
    validation_parallel: int = 100,
    validation_split: Literal["example", "tool"] = "example",
    validation_agent: int = 300,
    everyday: int = 0,
    validation_everyday: int = 300,
) -> dict[str, int]:
    """Build the training, validation and test files under `out_dir` and return their counts.

    Writes train.jsonl (padded to `tools_per_example` tools, plus no-call and synthetic examples:
    `synthetic_per_tool` single calls per training-side tool, `synthetic_parallel` two-call examples, `everyday`
    agent-style requests over three quarters of the everyday tools: `training.everyday`);
    validation.jsonl (`validation_split` "example": `validation_fraction` of each source's examples; "tool": the
    examples that call held-out tools, which then appear in no training example, distractor or synthetic
    example: `split_by_tool`), plus two "no call" copies of each call example (one with its gold tools removed,
    siblings kept, and one with its own tools replaced by another example's gold tool, the way BFCL's irrelevance
    category is built: `make_no_call`, `make_foreign_no_call`); validation_multi.jsonl (`composed_validation`
    two-call examples composed from the validation call examples: `compose_multi_call`);
    validation_parallel.jsonl (`validation_parallel` synthetic examples of 2-4 calls to validation's gold tools,
    the `synthesize_parallel` shapes); validation_everyday.jsonl (with `everyday`: `validation_everyday` requests
    over the other quarter of the everyday tools); validation_agent.jsonl (`validation_agent` later steps of agent
    turns over the validation call examples, validation_parallel and validation_everyday: `training.agent_turns`);
    test.jsonl; catalog_train.jsonl and catalog_test.jsonl (unique schemas per side); and counts.json: examples
    per split and per `split/source`, catalog sizes, `dropped/<reason>/<category>` and
    `test_gold_invalid/<category>` (test examples kept although their gold call does not validate). The
    validation views and test.jsonl hold each example's own tools only: evaluation adds distractors.
    Deterministic for a seed.
    """
    from .agent_turns import agent_turns  # imported here: these build on this module
    from .everyday import everyday_examples, split_everyday
    from .synthetic import synthesize, synthesize_parallel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats: Counter[str] = Counter()

    test_raw = [raw for category in TEST_CATEGORIES for raw in bfcl_functions(category)]
    test_catalog = build_catalog(test_raw)
    test_names = {raw.get("name") for raw in test_raw}
    full_train_catalog = build_catalog(raw for c in TRAIN_CATEGORIES for raw in bfcl_functions(c))
    train_catalog = {
        h: t for h, t in full_train_catalog.items() if h not in test_catalog and t["name"] not in test_names
    }
    pool = list(train_catalog.values())

    examples = []
    for category in TRAIN_CATEGORIES:
        for example in load_bfcl(category, stats):
            if all(schema_hash(tool) in train_catalog for tool in example.tools):
                examples.append(example)
            else:
                stats[f"dropped/uses_test_side_tool/{category}"] += 1
    test = [example for category in TEST_CATEGORIES for example in load_bfcl(category, stats)]

    if validation_split == "tool":
        train, validation, held_out = split_by_tool(examples, validation_fraction, random.Random(f"{seed}:validation"))
        pool = [tool for tool in pool if tool["name"] not in held_out]
        stats["held_out_tools"] = len(held_out)
        stats["dropped/shares_held_out_tool"] = len(examples) - len(train) - len(validation)
    elif validation_split == "example":
        train, validation = split_validation(examples, validation_fraction, random.Random(f"{seed}:validation"))
    else:
        raise ValueError(f"validation_split must be 'example' or 'tool', got {validation_split!r}")
    rng = random.Random(f"{seed}:validation_no_call")  # a task whose tool is missing, its siblings kept
    validation_multi = compose_multi_call(validation, composed_validation, random.Random(f"{seed}:composed"))
    gold_tools = {schema_hash(t): t for e in validation for t in e.tools if t["name"] in {c.name for c in e.calls}}
    validation_lists = [
        example.model_copy(update={"id": f"validation_{example.id}"})
        for example in synthesize_parallel(list(gold_tools.values()), validation_parallel,
                                           random.Random(f"{seed}:validation_parallel"))
    ]
    with_calls = [e for e in validation if e.calls]
    everyday_validation: list[Example] = []
    if everyday:
        everyday_train_tools, everyday_validation_tools = split_everyday(0.25, random.Random(f"{seed}:everyday_split"))
        train += everyday_examples(everyday, random.Random(f"{seed}:everyday"), tools=everyday_train_tools)
        everyday_validation = [
            example.model_copy(update={"id": f"validation_{example.id}"})
            for example in everyday_examples(validation_everyday, random.Random(f"{seed}:validation_everyday"),
                                             tools=everyday_validation_tools)]
    validation_turns = agent_turns(with_calls + validation_lists + [e for e in everyday_validation if e.calls],
                                   validation_agent, random.Random(f"{seed}:agent"))
    validation += [make_no_call(e, pool, 0, rng) for e in with_calls]
    rng = random.Random(f"{seed}:validation_foreign")  # BFCL's irrelevance construction: another task's tool
    validation += [make_foreign_no_call(e, with_calls, rng) for e in with_calls]
    if synthetic_per_tool:
        train += synthesize(pool, synthetic_per_tool, random.Random(f"{seed}:synthetic"))
    if synthetic_parallel:
        train += synthesize_parallel(pool, synthetic_parallel, random.Random(f"{seed}:synthetic_parallel"))
    single = [example for example in train if len(example.calls) == 1]
    rng = random.Random(f"{seed}:no_call")
    no_call = [make_no_call(e, pool, tools_per_example, rng)
               for e in rng.sample(single, round(no_call_fraction * len(single)))]
    rng = random.Random(f"{seed}:distractors")
    train = [pad_with_distractors(e, pool, tools_per_example, rng) for e in train] + no_call

    views = {"train": train, "validation": validation, "validation_multi": validation_multi,
             "validation_parallel": validation_lists, "validation_agent": validation_turns,
             "validation_everyday": everyday_validation, "test": test}
    for name, rows in views.items():
        _write_jsonl(out / f"{name}.jsonl", (example.model_dump() for example in rows))
    _write_jsonl(out / "catalog_train.jsonl", ({"schema_hash": h, **t} for h, t in train_catalog.items()))
    _write_jsonl(out / "catalog_test.jsonl", ({"schema_hash": h, **t} for h, t in test_catalog.items()))

    counts: Counter[str] = Counter({name: len(rows) for name, rows in views.items()})
    counts["irrelevance"] = sum(not example.calls for example in test)
    for name, rows in views.items():
        counts.update(f"{name}/{example.source}" for example in rows)
    counts["catalog_train"] = len(train_catalog)
    counts["catalog_test"] = len(test_catalog)
    counts["catalog_train_excluded"] = len(full_train_catalog) - len(train_catalog)
    counts.update(stats)
    result = dict(sorted(counts.items()))
    (out / "counts.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def load_prepared(directory: str | Path, split: str) -> list[Example]:
    """One named split of a `prepare`d folder: train, validation, validation_multi (composed two-call examples),
    validation_parallel (synthetic lists of 2-4 calls), validation_agent (later steps of agent turns),
    validation_everyday (requests to held-out everyday tools), test, or irrelevance (no-call test examples)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    file = "test" if split == "irrelevance" else split
    examples = load_jsonl(Path(directory) / f"{file}.jsonl", check_calls=file != "test")
    return [e for e in examples if not e.calls] if split == "irrelevance" else examples
