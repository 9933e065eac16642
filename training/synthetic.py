"""Synthetic single-call examples from training-side tool schemas (augmentation only, `source="synthetic"`).

Arguments are sampled by type (enums, consts, bounds, lengths, formats, nested arrays and objects; every
required key, optional keys some of the time) and each call is validated against its schema before it
is kept. The user message states the tool's purpose, taken from its description, and the values.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from .data import Example, GoldCall, call_errors, schema_hash

log = logging.getLogger(__name__)

MAX_TRIES = 5
"""Samples tried per example before a tool is given up on (e.g. a `pattern` the sampler cannot meet)."""

_FIRST_NAMES = ("Anna", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Mei", "Omar")
_LAST_NAMES = ("Smith", "Garcia", "Müller", "Chen", "Okafor", "Rossi", "Kowalski", "Tanaka", "Dubois", "Silva")
_CITIES = ("Paris", "Berlin", "Tokyo", "New York, NY", "San Francisco", "Lagos", "São Paulo", "Mumbai", "Sydney",
           "Toronto", "Madrid", "Seoul")
_COUNTRIES = ("France", "Germany", "Japan", "USA", "Brazil", "India", "Canada", "Kenya", "Spain", "Australia")
_WORDS = ("quarterly report", "blue", "premium", "weekly summary", "project alpha", "invoice 2231", "holiday",
          "marketing", "standard", "draft", "urgent", "backup", "kitchen", "sports", "jazz", "budget")
_Maker = Callable[[random.Random], str]
_HINTS: tuple[tuple[frozenset[str], _Maker], ...] = tuple((frozenset(words.split()), make) for words, make in (
    ("email mail", lambda r: f"{r.choice(_FIRST_NAMES).lower()}.{r.choice(_LAST_NAMES).lower()}@example.com"),
    ("url link uri endpoint website href",
     lambda r: f"https://example.com/{r.choice(_WORDS).replace(' ', '-')}"),
    ("city location place address destination origin from to where", lambda r: r.choice(_CITIES)),
    ("country region", lambda r: r.choice(_COUNTRIES)),
    ("date day birthday", lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"),
    ("time hour", lambda r: f"{r.randint(0, 23):02d}:{r.choice(('00', '15', '30', '45'))}"),
    ("path file folder directory dir", lambda r: f"/home/user/{r.choice(_WORDS).replace(' ', '_')}.txt"),
    ("lang language locale", lambda r: r.choice(("en", "fr", "de", "es", "ja"))),
    ("currency", lambda r: r.choice(("USD", "EUR", "JPY", "GBP"))),
    ("id key token code hash uuid", lambda r: f"{r.choice('abcdefxyz')}{r.randint(100, 99999)}"),
    ("name user username author person owner recipient",
     lambda r: f"{r.choice(_FIRST_NAMES)} {r.choice(_LAST_NAMES)}"),
))
"""Plausible strings by a word of the argument's name (`user_id` -> an id, `city_name` -> a city)."""
_FORMATS = {
    "date": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00:00Z",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.choice(('00', '30'))}:00Z",
    "email": lambda r: f"{r.choice(_FIRST_NAMES).lower()}@example.com",
    "uri": lambda r: f"https://example.com/{r.randint(1, 999)}",
}
_TEMPLATES = (
    "Can you {purpose}? {Args}.",
    "I need to {purpose}, with {args}.",
    "Please {purpose} using {args}.",
    "{Args} — {purpose}, please.",
    "Use {name} to {purpose}: {args}.",
    "{Purpose}. Use {args}.",
)
_TEMPLATES_NO_ARGS = ("Can you {purpose}?", "Please {purpose}.", "{Purpose}, please.", "I'd like to {purpose}.")
_PREFIX = re.compile(
    r"^(this (function|tool|endpoint|api|method)|(a|the) (function|tool|method) (that|which|to))\s+", re.I
)


class Unsatisfiable(ValueError):
    """A schema no sampled value can meet (e.g. an `enum` whose values contradict its `type`)."""


def _words(identifier: str) -> str:
    """`get_userInfo.v2` -> `get user info v2`."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", identifier)
    return re.sub(r"[_.\-]+", " ", spaced).strip().lower()


def _purpose(name: str, description: str) -> str:
    """A verb phrase for the tool's purpose: its description's first sentence, or its name in words."""
    sentence = re.split(r"(?<=[.!?])\s", description.strip(), maxsplit=1)[0].rstrip(".!? ")
    sentence = _PREFIX.sub("", sentence)[:160].strip()
    if not sentence:
        return _words(name)
    verb, _, rest = sentence.partition(" ")
    if verb.istitle() or verb.islower():  # "Retrieves" -> "retrieve"; leaves "API", "iOS" alone
        verb = verb.lower()
        if verb.endswith("ies"):
            verb = verb[:-3] + "y"
        elif verb.endswith(("ches", "shes", "sses", "xes")):
            verb = verb[:-2]
        elif verb.endswith("s") and not verb.endswith(("ss", "us", "is")):
            verb = verb[:-1]
    return f"{verb} {rest}".strip()


def _say(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_say(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_say(v)}" for k, v in value.items()) + "}"
    return str(value)


def _phrase_arguments(arguments: Mapping[str, Any], rng: random.Random) -> str:
    style = rng.randrange(3)
    parts = []
    for key, value in arguments.items():
        spoken = _say(value)
        parts.append((f"{_words(key)} {spoken}", f"{key}={spoken}", f"{_words(key)} set to {spoken}")[style])
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _bounds(schema: Mapping[str, Any], integer: bool) -> tuple[float, float]:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    step = 1 if integer else 0.01
    if "exclusiveMinimum" in schema and "minimum" not in schema:
        low += step
    if "exclusiveMaximum" in schema and "maximum" not in schema:
        high -= step
    if low is None and high is None:
        return (1, 50)
    if low is None:
        return (high - 50, high)
    return (low, low + 50) if high is None else (low, high)


def _string(schema: Mapping[str, Any], name: str, rng: random.Random) -> str:
    if schema.get("format") in _FORMATS:
        text = _FORMATS[schema["format"]](rng)
    else:
        words = set(_words(name).split())
        make = next((m for keys, m in _HINTS if keys & words), lambda r: r.choice(_WORDS))
        text = make(rng)
    min_length, max_length = schema.get("minLength", 0), schema.get("maxLength")
    text = text.ljust(min_length, "x")
    return text[:max_length] if max_length is not None else text


def _resolve_ref(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    target: Any = root
    for part in schema["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


def sample_value(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], name: str = "",
                 depth: int = 0) -> Any:
    """One value for a JSON Schema (`root` resolves `$ref`; `name` hints at plausible strings)."""
    if "$ref" in schema and depth < 16:
        return sample_value(_resolve_ref(schema, root), rng, root, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        validator = Draft202012Validator(schema)
        options = [value for value in schema["enum"] if validator.is_valid(value)]
        if not options:
            raise Unsatisfiable(f"no value of enum {schema['enum']!r} is valid for its schema")
        return rng.choice(options)
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample_value(rng.choice(schema[key]), rng, root, name, depth + 1)
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = rng.choice([t for t in declared if t != "null"] or ["null"])
    if declared is None:
        declared = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if declared == "integer":
        low, high = _bounds(schema, integer=True)
        value = rng.randint(int(low), int(high))
        step = schema.get("multipleOf")
        return value - value % step if isinstance(step, int) and step > 0 else value
    if declared == "number":
        low, high = _bounds(schema, integer=False)
        return round(rng.uniform(low, high), 2) if rng.random() < 0.7 else rng.randint(int(low), int(high))
    if declared == "boolean":
        return rng.random() < 0.5
    if declared == "null":
        return None
    if declared == "array":
        prefix = schema.get("prefixItems") or []
        low = max(schema.get("minItems", 1), len(prefix))
        count = rng.randint(low, max(low, min(schema.get("maxItems", 3), low + 2)))
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        values = [sample_value(s, rng, root, name, depth + 1) for s in prefix]
        values += [sample_value(items, rng, root, name, depth + 1) for _ in range(count - len(prefix))]
        return values
    if declared == "object":
        return _sample_object(schema, rng, root, depth)
    return _string(schema, name, rng)


def _sample_object(
    schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int
) -> dict[str, Any]:
    properties = schema.get("properties")
    if properties is None:
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {"type": "string"}
        key = rng.choice(("label", "note"))
        return {key: sample_value(extra, rng, root, key, depth + 1)}
    required = set(schema.get("required", []))
    values = {}
    for key, sub in properties.items():
        if key in required:
            values[key] = sample_value(sub, rng, root, key, depth + 1)
        elif rng.random() < 0.5:
            try:
                values[key] = sample_value(sub, rng, root, key, depth + 1)
            except Unsatisfiable:  # an optional key that cannot be filled is left out
                continue
    return values


def _message(tool: Mapping[str, Any], arguments: Mapping[str, Any], rng: random.Random) -> str:
    purpose = _purpose(tool["name"], tool["description"])
    if not arguments:
        template = rng.choice(_TEMPLATES_NO_ARGS)
        args = ""
    else:
        template = rng.choice(_TEMPLATES)
        args = _phrase_arguments(arguments, rng)
    return template.format(
        purpose=purpose, Purpose=purpose[:1].upper() + purpose[1:], args=args, Args=args[:1].upper() + args[1:],
        name=tool["name"],
    )


def _entry(tool: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": tool["name"], "description": tool["description"], "parameters": tool["parameters"]}


def _sample_call(entry: Mapping[str, Any], rng: random.Random) -> tuple[dict[str, Any], str] | None:
    """(arguments, user message) of one call that validates against `entry`'s schema, or None after `MAX_TRIES`."""
    for _ in range(MAX_TRIES):
        try:
            arguments = _sample_object(entry["parameters"], rng, entry["parameters"], 0)
        except Unsatisfiable:
            continue
        message = _message(entry, arguments, rng)  # drawn before the check: the rng stream of earlier releases
        probe = Example(id="probe", source="synthetic", tools=[entry], messages=[{"role": "user", "content": message}],
                        calls=[GoldCall(name=entry["name"], arguments=arguments)])
        if not call_errors(probe):
            return arguments, message
    return None


def synthesize(tools: Iterable[Mapping[str, Any]], n_per_tool: int, rng: random.Random) -> list[Example]:
    """`n_per_tool` single-call examples per tool; every call validates against the tool's schema.

    `tools` are training-side tools in the unified format (`{"name", "description", "parameters"}`, e.g.
    catalog entries). A tool whose samples fail validation `MAX_TRIES` times in a row, or whose required
    arguments cannot be sampled at all (`Unsatisfiable`), is skipped and the count logged.
    """
    examples = []
    skipped = 0
    for tool in tools:
        entry = _entry(tool)
        for index in range(n_per_tool):
            sampled = _sample_call(entry, rng)
            if sampled is None:
                skipped += 1
                break
            arguments, message = sampled
            examples.append(Example(
                id=f"synthetic:{schema_hash(entry)[:16]}:{index}", source="synthetic",
                tools=[entry], messages=[{"role": "user", "content": message}],
                calls=[GoldCall(name=entry["name"], arguments=arguments)],
            ))
    if skipped:
        log.warning("synthesize: skipped %d tools whose sampled calls did not validate", skipped)
    return examples


_JOINS = ("{first} Also, {second}", "{first} And then: {second}", "{first} After that, {second}", "{first} {second}")
_SAME_TOOL = ("{Purpose} for each of these: {cases}.", "Can you {purpose} for {cases}?",
              "Please {purpose} several times: {cases}.")
CALL_COUNTS = (2, 2, 2, 3, 4)
"""Calls per synthetic parallel example, drawn uniformly (the training-side live_parallel* examples: 2 to 4)."""


def _ask_all(entries: Sequence[Mapping[str, Any]], sampled: Sequence[tuple[dict[str, Any], str]],
             rng: random.Random) -> str:
    """One user message asking for every call: the same tool's cases listed after its purpose once (half of the
    same-tool examples), else each call's own sentence joined to the next."""
    if len({e["name"] for e in entries}) == 1 and all(args for args, _ in sampled) and rng.random() < 0.5:
        purpose = _purpose(entries[0]["name"], entries[0]["description"])
        cases = "; ".join(_phrase_arguments(args, rng) for args, _ in sampled)
        return rng.choice(_SAME_TOOL).format(purpose=purpose, Purpose=purpose[:1].upper() + purpose[1:], cases=cases)
    message = sampled[0][1]
    for _, next_message in sampled[1:]:
        message = rng.choice(_JOINS).format(first=message, second=next_message[:1].lower() + next_message[1:])
    return message


def synthesize_parallel(tools: Sequence[Mapping[str, Any]], count: int, rng: random.Random) -> list[Example]:
    """`count` multi-call examples (source `synthetic_parallel`, 2 to 4 calls, see `CALL_COUNTS`): half the same
    tool called with different arguments (BFCL "parallel"), half as many different tools ("parallel_multiple");
    one user message asks for all of them. Every call validates; a draw whose calls cannot be sampled, or repeat
    the same arguments, is skipped."""
    entries = [_entry(tool) for tool in tools]
    examples: list[Example] = []
    for index in range(count):
        n_calls = rng.choice(CALL_COUNTS)
        same_tool = index % 2 == 0
        chosen = [rng.choice(entries)] * n_calls if same_tool else rng.sample(entries, n_calls)
        if not same_tool and len({entry["name"] for entry in chosen}) < n_calls:  # schemas sharing a name
            continue
        sampled = [_sample_call(entry, rng) for entry in chosen]
        if None in sampled or len({orjson.dumps(s[0], option=orjson.OPT_SORT_KEYS) for s in sampled}) < n_calls:
            continue
        own = list({entry["name"]: entry for entry in chosen}.values())
        examples.append(Example(
            id=f"synthetic_parallel:{index}", source="synthetic_parallel", tools=own,
            messages=[{"role": "user", "content": _ask_all(chosen, sampled, rng)}],
            calls=[GoldCall(name=entry["name"], arguments=args) for entry, (args, _) in zip(chosen, sampled)],
        ))
    return examples
