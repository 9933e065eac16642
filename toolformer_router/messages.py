"""The conversation a request carries: validated chat messages, the texts they state, and the decoder's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from transformers import PreTrainedTokenizerBase

from .errors import InvalidQueryError
from .schema import non_finite_number

Query = str | Sequence[dict[str, Any]]
ROLES = ("system", "user", "assistant", "tool")


def _check_text(text: Any, where: str) -> str:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidQueryError(f"{where} is not valid UTF-8: {error}") from None
    if not isinstance(text, str):
        raise InvalidQueryError(f"{where} must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidQueryError(f"{where} is not valid UTF-8 text: {error}") from None
    return text


def _normalize_call(call: Any, where: str) -> dict[str, Any]:
    """One earlier call in any of the usual forms (`{name, arguments}`, LangChain's `{name, args}`, OpenAI's
    `{function: {name, arguments: "<JSON>"}}`) -> `{name, arguments: dict}`."""
    if not isinstance(call, dict):
        raise InvalidQueryError(f"{where} must be a dict, got {type(call).__name__}")
    function = call.get("function") or {}
    if not isinstance(function, dict):
        raise InvalidQueryError(f"{where}: 'function' must be an object with name and arguments, "
                                f"got {type(function).__name__}")
    name = call.get("name") or function.get("name")
    arguments = call.get("arguments", call.get("args", function.get("arguments", {})))
    if isinstance(arguments, (str, bytes)):
        try:
            arguments = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError as error:
            raise InvalidQueryError(f"{where} arguments are not valid JSON: {error}") from None
    if not isinstance(name, str) or not name:
        raise InvalidQueryError(f"{where} has no tool name")
    if not isinstance(arguments, dict):
        raise InvalidQueryError(f"{where} arguments must be a JSON object, got {type(arguments).__name__}")
    try:  # the prompt writes them as JSON: refuse what JSON cannot hold, as the writing would
        orjson.dumps(arguments)
    except orjson.JSONEncodeError as error:
        raise InvalidQueryError(f"{where} arguments are not JSON: {error}") from None
    if found := non_finite_number(arguments, f"{where} arguments"):
        raise InvalidQueryError(f"{found} is not a JSON number")
    return {"name": name, "arguments": arguments}


def normalize_messages(query: Query | bytes) -> list[dict[str, Any]]:
    """A query string or a list of chat messages -> validated `{role, content[, tool_calls, name]}` dicts."""
    if isinstance(query, (str, bytes)):
        text = _check_text(query, "query")
        if not text.strip():
            raise InvalidQueryError("query is empty")
        return [{"role": "user", "content": text}]
    if not isinstance(query, Sequence) or not query:
        raise InvalidQueryError("query must be a non-empty string or a non-empty list of chat messages")
    messages = []
    for i, message in enumerate(query):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidQueryError(f"message {i} must be a dict with a role in {ROLES}, got {str(message)[:120]}")
        content = message.get("content")
        content = "" if content is None else _check_text(content, f"message {i} content")
        normalized = {"role": message["role"], "content": content}
        if message.get("tool_calls"):
            calls = message["tool_calls"]
            if isinstance(calls, (str, bytes, dict)) or not isinstance(calls, Sequence):
                raise InvalidQueryError(f"message {i} tool_calls must be a list of calls, got {type(calls).__name__}")
            normalized["tool_calls"] = [_normalize_call(call, f"message {i} tool call {j}")
                                        for j, call in enumerate(calls)]
        if message.get("name"):
            normalized["name"] = _check_text(message["name"], f"message {i} name")
        messages.append(normalized)
    if not any(m["content"].strip() or m.get("tool_calls") for m in messages if m["role"] != "system"):
        raise InvalidQueryError("the conversation has no non-empty user, assistant or tool message")
    return messages


def conversation_texts(messages: list[dict[str, Any]]) -> list[str]:
    """What normalised `messages` state: every message's content, then the earlier calls' arguments as JSON."""
    texts = [m["content"] for m in messages]
    return texts + [orjson.dumps(c["arguments"]).decode() for m in messages for c in m.get("tool_calls") or ()]


def executed_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of the current turn whose results are in: the calls of each assistant message after the last
    user message that a tool message follows."""
    users = [i for i, message in enumerate(messages) if message["role"] == "user"]
    executed: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for message in messages[users[-1] + 1 if users else 0:]:
        if message["role"] == "assistant":
            pending = list(message.get("tool_calls") or ())
        elif message["role"] == "tool":
            executed += pending
            pending = []
    return executed


def call_key(call: dict[str, Any]) -> tuple[str, bytes]:
    """What makes two calls the same call: the name and the arguments as canonical JSON."""
    return call["name"], orjson.dumps(call["arguments"], option=orjson.OPT_SORT_KEYS)


def selection_text(messages: list[dict[str, Any]]) -> str:
    """The text selection reads: the last user message (the last message when there is none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])


def parse_call_list(raw: str) -> list[dict[str, Any]] | None:
    """A completed call list, or None when one of its numbers has no 64-bit value (e.g. "1e999"): the grammar
    bounds the syntax of numbers, not their magnitude."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]],
                  system_prompt: str | None) -> list[int]:
    """The decoder's prompt: `render_prompt_text` in tokens (as the chat template's own tokenizing does it)."""
    text = render_prompt_text(tokenizer, messages, system_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]],
                       system_prompt: str | None) -> str:
    """The decoder's prompt as text: the backbone's chat template over `system_prompt` (None: none of the
    router's) and the conversation; earlier calls are written as their JSON list, tool results as user turns."""
    rendered: list[dict[str, str]] = []
    parts = [system_prompt] if system_prompt is not None else []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            parts += [content] if content else []
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = orjson.dumps([{"name": c["name"], "arguments": c["arguments"]} for c in message["tool_calls"]])
            content = (content + "\n" if content else "") + calls.decode()
        if role == "tool":
            role, content = "user", f"Result of {message.get('name') or 'the tool'}: {content}"
        rendered.append({"role": role, "content": content})
    if parts:
        rendered.insert(0, {"role": "system", "content": "\n\n".join(parts)})
    return tokenizer.apply_chat_template(rendered, add_generation_prompt=True, tokenize=False)
