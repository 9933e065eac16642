"""Agent turns: multi-step training examples built from single-turn call examples.

An agent runs the router's calls and sends the conversation back with their results. Every example of the
training side becomes such later steps of its turn (`agent_turns`):

- "answered": the request, the assistant's calls and a result for each; the gold answer is "no call" (the
  router then answers in text from the results);
- "remaining": a request of several calls with the first ones run; the gold answer is the calls still to make;
- "failed": the calls ran and a result reports an error; the gold answer is "no call" (the answer says what
  failed: the arguments came from the request, so the same call would fail again).

Results are synthetic (`tool_result`, `error_result`): short JSON objects or sentences that echo the call's
arguments and add a value, the shapes real tools return.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import orjson

from .data import Example, GoldCall

KINDS = ("answered", "remaining", "failed")
SOURCE_PREFIX = "agent_"
"""Agent-turn examples have the source `agent_<kind>`."""

_VALUES = (lambda r: round(r.uniform(0, 500), 2), lambda r: r.randint(1, 99), lambda r: r.choice(
    ("ok", "done", "confirmed", "sunny", "pending", "shipped", "available", "3 items", "no change")))
_FIELDS = ("result", "value", "status", "output", "data", "total", "answer")
_ERRORS = ("Error: {name} failed: service unavailable (503).", "{{\"error\": \"not found\", \"code\": 404}}",
           "Error: invalid value for {argument}.", "{{\"error\": \"rate limit exceeded, try again later\"}}",
           "Exception: timeout while calling {name}.", "{{\"ok\": false, \"message\": \"permission denied\"}}")


def tool_result(call: GoldCall, rng: random.Random) -> str:
    """A plausible successful result of `call`: a JSON object that echoes one argument and adds a value, or a
    sentence saying the same."""
    value = rng.choice(_VALUES)(rng)
    echoed = dict(rng.sample(sorted(call.arguments.items(), key=lambda item: item[0]), min(1, len(call.arguments))))
    if rng.random() < 0.25:
        said = ", ".join(f"{key} {orjson.dumps(v).decode()}" for key, v in echoed.items())
        return f"{call.name} returned {value}" + (f" for {said}." if said else ".")
    return orjson.dumps({**echoed, rng.choice(_FIELDS): value}).decode()


def error_result(call: GoldCall, rng: random.Random) -> str:
    """A result that reports that `call` failed."""
    argument = next(iter(call.arguments), "input")
    return rng.choice(_ERRORS).format(name=call.name, argument=argument)


def _ran(calls: Sequence[GoldCall], results: Sequence[str]) -> list[dict[str, Any]]:
    """The assistant message with `calls` and one tool message per result."""
    assistant = {"role": "assistant", "content": "",
                 "tool_calls": [{"name": call.name, "arguments": call.arguments} for call in calls]}
    return [assistant, *({"role": "tool", "name": call.name, "content": result}
                         for call, result in zip(calls, results))]


def agent_turn(example: Example, kind: str, rng: random.Random) -> Example | None:
    """The later step `kind` (see `KINDS`) of `example`'s turn; None where it has no such step ("remaining"
    needs two calls or more)."""
    calls = example.calls
    if kind == "answered":
        messages, gold = _ran(calls, [tool_result(call, rng) for call in calls]), []
    elif kind == "remaining":
        if len(calls) < 2:
            return None
        done = rng.randint(1, len(calls) - 1)
        messages, gold = _ran(calls[:done], [tool_result(call, rng) for call in calls[:done]]), calls[done:]
    elif kind == "failed":
        failing = rng.randrange(len(calls))
        results = [error_result(call, rng) if i == failing else tool_result(call, rng) for i, call in enumerate(calls)]
        messages, gold = _ran(calls, results), []
    else:
        raise ValueError(f"unknown agent-turn kind {kind!r}; expected one of {KINDS}")
    return example.model_copy(update={"id": f"{example.id}:{SOURCE_PREFIX}{kind}", "source": SOURCE_PREFIX + kind,
                                      "messages": [*example.messages, *messages], "calls": list(gold)})


def agent_turns(examples: Sequence[Example], count: int, rng: random.Random,
                weights: Sequence[float] = (0.5, 0.3, 0.2)) -> list[Example]:
    """Up to `count` agent-turn examples of the call examples among `examples` (single-turn ones only), the
    kinds drawn with `weights`; a "remaining" step is drawn from the examples with two or more calls (most
    examples have one, and a kind drawn per example would leave "remaining" rare), or is "answered" if none has."""
    pool = [e for e in examples if e.calls and all(m["role"] in ("system", "user") for m in e.messages)]
    if not pool:
        return []
    several = [e for e in pool if len(e.calls) >= 2]
    turns = []
    for index in range(count):
        kind = rng.choices(KINDS, weights)[0]
        example = rng.choice(several if kind == "remaining" and several else pool)
        turn = agent_turn(example, kind, rng) or agent_turn(example, "answered", rng)
        turns.append(turn.model_copy(update={"id": f"{turn.id}:{index}"}))
    return turns
