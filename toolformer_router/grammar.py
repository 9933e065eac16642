"""The output grammar, built from the active tools with llguidance (docs/grammar.md says why llguidance).

Output language (compact JSON, no free whitespace):

    start  : calls | text
    calls  : "[" call ("," call)* "]"          # one call is a one-element list
    call   : t0 | t1 | ...                     # one alternative per active tool
    tK     : %json {"name": <const>, "arguments": <the tool's parameters schema>}
    text   : a plain-text answer (the "no call" outcome) that does not start with "[" or "{"

`tool_choice` narrows `start` ("required": calls only; "none": text only; a name: calls of that tool only)
and `parallel_tool_calls=False` allows exactly one call. Each tool's `%json` rule text is cached by the
tool's schema hash, so a new tool set only joins cached strings (~0.2-0.3 ms per tool).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import cachetools
import llguidance
import llguidance.hf
import orjson
from transformers import PreTrainedTokenizerBase

from .errors import InvalidToolError, UnknownToolError
from .schema import MAX_CACHED_TOOLS, Tool

_NO_FREE_WHITESPACE = {"x-guidance": {"whitespace_flexible": False}}
_TEXT_RULE = r'text: /[^\[{\s][^\x00]*/'
_PARSER_LIMITS = llguidance.LLParserLimits(max_items_in_row=50_000)
_REF = re.compile(r'"\$ref":"#/(\$defs|definitions)/')


def call_schema(tool: Tool) -> dict[str, Any]:
    """JSON Schema of one call of `tool`: `{"name": <const>, "arguments": <parameters>}`.

    `$defs` of the parameters are hoisted to the root (references resolve from the document root).
    """
    parameters = copy.deepcopy(tool.parameters)
    definitions = {**parameters.pop("$defs", {}), **parameters.pop("definitions", {})}
    if definitions:
        parameters = orjson.loads(_REF.sub('"$ref":"#/$defs/', orjson.dumps(parameters).decode()))
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = orjson.loads(_REF.sub('"$ref":"#/$defs/', orjson.dumps(definitions).decode()))
    return schema


ToolChoice = str | dict | bool | None


def _ordered(value: Any, schema: dict[str, Any]) -> Any:
    """`value` with object keys in the schema's `properties` order (the order the grammar enforces)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        known = [k for k in properties if k in value]
        extra = [k for k in value if k not in properties]
        return {k: _ordered(value[k], properties.get(k, {})) for k in known + extra}
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
        return [_ordered(v, items) for v in value]
    return value


def render_calls(calls: list[tuple[str, dict[str, Any]]], tools: list[Tool]) -> str:
    """The exact output text the grammar expects for these calls: a compact JSON list of
    `{"name", "arguments"}` with arguments in each schema's property order (training targets use this)."""
    by_name = {tool.name: tool for tool in tools}
    rendered = []
    for name, arguments in calls:
        if name not in by_name:
            raise UnknownToolError(f"call names {name!r}, which is not among the active tools")
        rendered.append({"name": name, "arguments": _ordered(arguments, by_name[name].parameters)})
    return orjson.dumps(rendered).decode()


def resolve_tool_choice(tool_choice: ToolChoice, tools: list[Tool]) -> tuple[str, str | None]:
    """Map OpenAI/LangChain `tool_choice` forms to (mode, forced name); mode in auto/required/none/forced."""
    names = {tool.name for tool in tools}
    if tool_choice in (None, "auto", False):
        return ("auto", None) if tools else ("none", None)
    if tool_choice == "none":
        return "none", None
    if tool_choice in ("any", "required", True):
        if not tools:
            raise UnknownToolError("tool_choice requires a call but no tools are active")
        return "required", None
    name = tool_choice
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function") or {}
        name = function.get("name", tool_choice.get("name")) if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise UnknownToolError(f"unsupported tool_choice {tool_choice!r:.120}")
    if name not in names:
        raise UnknownToolError(f"tool_choice names {name!r:.80}, which is not among the active tools")
    return "forced", name


class ToolGrammar:
    """Builds a per-request llguidance matcher from cached per-tool rules."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, max_cached_rules: int = MAX_CACHED_TOOLS):
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self.vocab_size = vocab_size
        self._rules: cachetools.LRUCache[str, str] = cachetools.LRUCache(maxsize=max_cached_rules)

    def tool_rule(self, tool: Tool) -> str:
        """`%json {...}` rule body of one tool's call, cached by schema hash."""
        rule = self._rules.get(tool.schema_hash)
        if rule is None:
            rule = "%json " + orjson.dumps({**_NO_FREE_WHITESPACE, **call_schema(tool)}).decode()
            self._rules[tool.schema_hash] = rule
        return rule

    def check_tool(self, tool: Tool) -> None:
        """Raise `InvalidToolError` if the tool's call schema does not compile to a grammar."""
        error = llguidance.LLMatcher.validate_grammar(
            llguidance.LLMatcher.grammar_from_lark(f"start: t0\nt0: {self.tool_rule(tool)}\n")
        )
        if error:
            raise InvalidToolError(f"tool {tool.name!r}: its schema cannot be enforced: {error.splitlines()[0]}")

    def lark(self, tools: list[Tool], tool_choice: ToolChoice = None, parallel_tool_calls: bool = True) -> str:
        """The request's grammar in llguidance's Lark dialect."""
        mode, forced = resolve_tool_choice(tool_choice, tools)
        if mode == "forced":
            tools = [tool for tool in tools if tool.name == forced]
        calls = '"[" call ("," call)* "]"' if parallel_tool_calls else '"[" call "]"'
        start = {"auto": "calls | text", "required": "calls", "forced": "calls", "none": "text"}[mode]
        lines = [f"start: {start}", _TEXT_RULE]
        if mode != "none":
            lines.append(f"calls: {calls}")
            lines.append("call: " + " | ".join(f"t{i}" for i in range(len(tools))))
            lines += [f"t{i}: {self.tool_rule(tool)}" for i, tool in enumerate(tools)]
        return "\n".join(lines) + "\n"

    def matcher(
        self, tools: list[Tool], tool_choice: ToolChoice = None, parallel_tool_calls: bool = True
    ) -> llguidance.LLMatcher:
        grammar = llguidance.LLMatcher.grammar_from_lark(self.lark(tools, tool_choice, parallel_tool_calls))
        matcher = llguidance.LLMatcher(self.ll_tokenizer, grammar, limits=_PARSER_LIMITS)
        if matcher.is_error():
            raise RuntimeError(f"grammar compilation failed: {matcher.get_error():.500}")
        return matcher
