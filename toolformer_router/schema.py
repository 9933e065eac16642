"""Tool definitions: accepted input shapes, normalisation to JSON Schema, canonical hash, encoder text.

A tool reaches the router as an OpenAI function (`{"type": "function", "function": {...}}`), a bare
`{name, description, parameters}` dict, an MCP tool (`{name, description, inputSchema}`) or a BFCL
function doc (types `dict`, `float`, `tuple`, `any`). All become a frozen `Tool` whose `parameters` is
strict JSON Schema (every object with properties gets `additionalProperties: false`, `required` lists
declared properties only) and whose `schema_hash` (sha256 of the canonical JSON) keys every cache.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .errors import DuplicateToolError, InvalidToolError, SchemaTooLongError

MAX_NAME_CHARS = 256
MAX_SCHEMA_BYTES = 256 * 1024
MAX_SCHEMA_DEPTH = 32
MAX_CACHED_TOOLS = 10_000
"""Default bound of every per-tool cache in memory, keyed by `Tool.schema_hash` (`ToolRouter(max_cached_tools=)`)."""

_BFCL_TYPES = {
    "dict": "object",
    "float": "number",
    "double": "number",
    "tuple": "array",
    "list": "array",
    "int": "integer",
    "long": "integer",
    "str": "string",
    "bool": "boolean",
    "String": "string",
    "Boolean": "boolean",
}
_JSON_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SUBSCHEMA_KEYS = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SUBSCHEMA_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAP_KEYS = ("properties", "$defs", "definitions", "patternProperties")


@dataclass(frozen=True)
class Tool:
    """A normalised tool: name, description and strict JSON Schema parameters (treat as read-only)."""

    name: str
    description: str
    parameters: dict[str, Any]
    schema_hash: str = field(compare=False)

    def to_openai(self) -> dict[str, Any]:
        """The tool as an OpenAI `tools=` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters),
            },
        }

    def canonical_json(self) -> bytes:
        """Key-sorted compact JSON of name, description and parameters: the bytes behind `schema_hash`."""
        return canonical_json(self.name, self.description, self.parameters)


def canonical_json(name: str, description: str, parameters: Mapping[str, Any]) -> bytes:
    return orjson.dumps(
        {"name": name, "description": description, "parameters": parameters},
        option=orjson.OPT_SORT_KEYS,
    )


def _normalize_type(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_normalize_type(v, where) for v in value]
    if not isinstance(value, str):
        raise InvalidToolError(f"{where}: 'type' must be a string or a list of strings, got {value!r:.80}")
    mapped = _BFCL_TYPES.get(value, _BFCL_TYPES.get(value.lower(), value))
    if mapped == "any":
        return None
    if mapped not in _JSON_TYPES:
        raise InvalidToolError(f"{where}: unknown type {value!r:.80}")
    return mapped


def non_finite_number(value: Any, where: str) -> str | None:
    """Where the first NaN or infinite number in `value` is ("where.key[0]: nan"), or None. JSON has no such
    numbers: written out they would become null and mean something else."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}: {value}"
    if isinstance(value, Mapping):
        children = ((f"{where}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        children = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next((found for path, item in children if (found := non_finite_number(item, path))), None)


def _check_finite(value: Any, where: str) -> None:
    if found := non_finite_number(value, where):
        raise InvalidToolError(f"{found} is not a JSON number")


def _normalize_schema(schema: Any, where: str, depth: int = 0) -> dict[str, Any] | bool:
    """Map BFCL types to JSON Schema and make objects strict, recursively (idempotent)."""
    if depth > MAX_SCHEMA_DEPTH:
        raise InvalidToolError(f"{where}: schema nested deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(schema, bool):  # `true` / `false` are valid (sub)schemas
        return schema
    if not isinstance(schema, Mapping):
        raise InvalidToolError(f"{where}: a schema must be an object, got {type(schema).__name__}")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped = _normalize_type(value, where)
            if mapped is not None:
                out["type"] = mapped
        elif key in _SUBSCHEMA_KEYS and isinstance(value, (Mapping, bool)):
            out[key] = _normalize_schema(value, f"{where}.{key}", depth + 1)
        elif key in _SUBSCHEMA_LIST_KEYS and isinstance(value, list):
            out[key] = [_normalize_schema(v, f"{where}.{key}[{i}]", depth + 1) for i, v in enumerate(value)]
        elif key in _SUBSCHEMA_MAP_KEYS:
            if not isinstance(value, Mapping):
                raise InvalidToolError(f"{where}.{key}: must be an object, got {type(value).__name__}")
            out[key] = {
                str(k): _normalize_schema(v, f"{where}.{key}.{k}", depth + 1) for k, v in value.items()
            }
        elif key == "optional":  # BFCL marks some parameters optional in place; `required` already says it
            continue
        else:
            _check_finite(value, f"{where}.{key}")
            out[key] = copy.deepcopy(value)
    if out.get("type") == "array" and isinstance(out.get("items"), list):  # draft-4 tuple form
        out["prefixItems"] = out.pop("items")
    properties = out.get("properties")
    if properties is not None:
        out.setdefault("type", "object")
        out.setdefault("additionalProperties", False)
        required = out.get("required")
        if required is not None:
            if not isinstance(required, list):
                raise InvalidToolError(f"{where}.required: must be a list of property names")
            out["required"] = [r for r in dict.fromkeys(required) if r in properties]
    elif out.get("type") == "object" and "required" in out:
        out.pop("required")
    return out


def _ref_target(ref: Any) -> str | None:
    """The definition a local `$ref` names: "#" for the root, "NAME" for `#/$defs/NAME` or `#/definitions/NAME`."""
    if ref == "#":
        return "#"
    for prefix in ("#/$defs/", "#/definitions/"):
        if isinstance(ref, str) and ref.startswith(prefix) and "/" not in ref[len(prefix):]:
            return ref[len(prefix):]
    return None


def _forced_refs(schema: Any) -> set[str]:
    """The definitions every value valid under `schema` must contain one of its own: through `$ref`, `allOf`,
    required properties and non-empty arrays; an `anyOf`/`oneOf` forces only what all its branches force."""
    if not isinstance(schema, Mapping):
        return set()
    forced = {target} if (target := _ref_target(schema.get("$ref"))) is not None else set()
    for sub in schema.get("allOf") or ():
        forced |= _forced_refs(sub)
    branches = [_forced_refs(sub) for key in ("anyOf", "oneOf") for sub in schema.get(key) or ()]
    if branches:
        forced |= set.intersection(*branches)
    properties = schema.get("properties") or {}
    for name in schema.get("required") or ():
        forced |= _forced_refs(properties.get(name))
    if isinstance(schema.get("minItems"), int) and schema["minItems"] > 0:
        forced |= _forced_refs(schema.get("items"))
    for item in schema.get("prefixItems") or ():
        forced |= _forced_refs(item)
    return forced


def _check_recursion(parameters: dict[str, Any], where: str) -> None:
    """Raise `InvalidToolError` when a definition requires itself again (`a -> a`, `a -> b -> a` through required
    properties): no finite value satisfies such a schema, and decoding one never ends."""
    definitions = {**parameters.get("definitions", {}), **parameters.get("$defs", {}), "#": parameters}
    edges = {name: _forced_refs(body) & definitions.keys() for name, body in definitions.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                cycle = " -> ".join(path[path.index(target):] + [target]) if target in path else target
                raise InvalidToolError(f"{where}: a recursive $ref that every value must follow without end "
                                       f"({cycle}): no finite value satisfies it")
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


def _raw_json(parameters: Mapping[str, Any], name: str) -> bytes:
    try:
        return orjson.dumps(parameters, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as error:
        raise InvalidToolError(f"tool {name!r}: parameters are not JSON-serialisable: {error}") from None


def _unwrap(tool: Any) -> tuple[Any, Any, Any]:
    if not isinstance(tool, Mapping):
        raise InvalidToolError(f"a tool must be a dict, got {type(tool).__name__}")
    if tool.get("type") == "function" and isinstance(tool.get("function"), Mapping):
        tool = tool["function"]
    parameters = tool.get("parameters", tool.get("inputSchema", tool.get("input_schema")))
    return tool.get("name"), tool.get("description"), parameters


def normalize_tool(tool: Any) -> Tool:
    """Validate one tool definition and return its strict, canonical `Tool`.

    Raises `InvalidToolError` naming the tool and the field at fault.
    """
    if isinstance(tool, Tool):
        return tool
    name, description, parameters = _unwrap(tool)
    if not isinstance(name, str) or not name.strip():
        raise InvalidToolError(f"tool is missing a non-empty string 'name': {str(tool)[:200]}")
    if len(name) > MAX_NAME_CHARS or _CONTROL_CHARS.search(name) or name != name.strip():
        raise InvalidToolError(
            f"tool name {name[:80]!r} must be at most {MAX_NAME_CHARS} characters, "
            "without control characters or surrounding spaces"
        )
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise InvalidToolError(f"tool {name!r}: 'description' must be a string")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise InvalidToolError(f"tool {name!r}: 'parameters' must be a JSON Schema object")
    raw_size = len(_raw_json(parameters, name))
    if raw_size > MAX_SCHEMA_BYTES:  # before any work that grows with the schema
        raise InvalidToolError(f"tool {name!r}: schema is {raw_size} bytes, more than {MAX_SCHEMA_BYTES}")
    normalized = _normalize_schema(parameters, f"tool {name!r} parameters")
    normalized.setdefault("type", "object")
    normalized.setdefault("properties", {})
    normalized.setdefault("additionalProperties", False)
    if normalized["type"] != "object":
        raise InvalidToolError(f"tool {name!r}: 'parameters' must have type 'object', got {normalized['type']!r}")
    _check_recursion(normalized, f"tool {name!r} parameters")
    try:
        Draft202012Validator.check_schema(normalized)
    except SchemaError as error:
        path = "/".join(str(p) for p in error.absolute_path) or "<root>"
        raise InvalidToolError(f"tool {name!r}: invalid JSON Schema at {path}: {error.message}") from None
    body = canonical_json(name, description, normalized)
    if len(body) > MAX_SCHEMA_BYTES:
        raise InvalidToolError(f"tool {name!r}: schema is {len(body)} bytes, more than {MAX_SCHEMA_BYTES}")
    return Tool(name=name, description=description, parameters=normalized, schema_hash=hashlib.sha256(body).hexdigest())


def normalize_tools(tools: Iterable[Any]) -> list[Tool]:
    """Normalise a list of tools; names must be unique (`DuplicateToolError` otherwise)."""
    if isinstance(tools, (str, bytes, Mapping)):
        raise InvalidToolError("tools must be a list of tool definitions")
    result: list[Tool] = []
    seen: set[str] = set()
    for tool in tools:
        normalized = normalize_tool(tool)
        if normalized.name in seen:
            raise DuplicateToolError(f"duplicate tool name {normalized.name!r}")
        seen.add(normalized.name)
        result.append(normalized)
    return result


def _descriptions(schema: dict[str, Any], path: tuple = ()) -> list[tuple[tuple, str]]:
    """(path, text) of every `description` inside a schema, nested ones included."""
    found = []
    if isinstance(schema.get("description"), str) and schema["description"]:
        found.append((path + ("description",), schema["description"]))
    for key in _SUBSCHEMA_KEYS:
        if isinstance(schema.get(key), dict):
            found += _descriptions(schema[key], path + (key,))
    for key in _SUBSCHEMA_LIST_KEYS:
        for i, sub in enumerate(schema.get(key) or []):
            if isinstance(sub, dict):
                found += _descriptions(sub, path + (key, i))
    for key in _SUBSCHEMA_MAP_KEYS:
        for prop, sub in (schema.get(key) or {}).items():
            if isinstance(sub, dict):
                found += _descriptions(sub, path + (key, prop))
    return found


def _set_path(obj: dict[str, Any], path: tuple, value: str) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


def _without_boilerplate(schema: Any) -> Any:
    """Drop `additionalProperties: false` (implied for every tool object) from the encoder's view."""
    if isinstance(schema, dict):
        return {k: _without_boilerplate(v) for k, v in schema.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [_without_boilerplate(v) for v in schema]
    return schema


def _render(name: str, description: str, parameters: dict[str, Any]) -> str:
    return orjson.dumps(
        {"name": name, "description": description, "parameters": _without_boilerplate(parameters)}
    ).decode()


def render_tool(tool: Tool) -> str:
    """The text the encoder reads: compact JSON of name, description, parameters, in that order
    (`additionalProperties: false`, implied for every tool object, is left out)."""
    return _render(tool.name, tool.description, tool.parameters)


def shortened_texts(tool: Tool) -> Iterator[str]:
    """The tool's full text, then its text after each step of the documented shortening order, the last one
    with no description left: the longest description (tool's or any parameter's) is halved, at a word
    boundary, again and again; a description shorter than 8 characters is dropped."""
    yield render_tool(tool)
    description = tool.description
    parameters = copy.deepcopy(tool.parameters)
    while True:
        entries = [(("tool",), description)] if description else []
        entries += _descriptions(parameters)
        if not entries:
            return
        path, longest = max(entries, key=lambda entry: len(entry[1]))
        shorter = longest[: len(longest) // 2].rsplit(" ", 1)[0] if len(longest) >= 8 else ""
        if path == ("tool",):
            description = shorter
        else:
            _set_path(parameters, path, shorter)
        yield _render(tool.name, description, parameters)


def fit_tool_text(
    tool: Tool, count_tokens: Callable[[list[str]], list[int]], max_tokens: int, *, chunk_size: int = 16
) -> str:
    """Render `tool` within `max_tokens`: the first of `shortened_texts(tool)` that fits, so names, types,
    enums and structure are never cut. `count_tokens` maps a list of texts to their token counts; the texts
    are counted `chunk_size` at a time. Raises `SchemaTooLongError` when even no description fits.
    """
    texts = shortened_texts(tool)
    while chunk := list(itertools.islice(texts, chunk_size)):
        counts = count_tokens(chunk)
        for text, count in zip(chunk, counts):
            if count <= max_tokens:
                return text
    raise SchemaTooLongError(
        f"tool {tool.name!r}: schema needs {counts[-1]} tokens without any description, "
        f"more than max_schema_tokens={max_tokens}; simplify its parameters or raise the cap"
    )
