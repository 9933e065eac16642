"""Use toolformer-router through the official `openai` client, as a drop-in tool-calling endpoint.

Start the server first (it loads the default checkpoint; add `--api-key KEY` to require a bearer token):

    pip install "toolformer-router[server]"
    toolformer-router serve --port 8000

then:

    python examples/openai_client.py --base-url http://127.0.0.1:8000/v1

It routes a few queries over the tools of `examples/custom_tools.json`, sends a
tool result back for one call, and streams one answer.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from openai import OpenAI

HERE = Path(__file__).parent
QUERIES = [
    "What's the weather like in Lisbon today, in celsius?",
    "Email anna@example.com that the report is ready.",
    "Convert 250 US dollars to euros.",
    "Hi! How are you?",
]


def openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI `tools=` entry from an OpenAI, bare `{name, description, parameters}` or MCP tool."""
    if tool.get("type") == "function":
        return tool
    parameters = tool.get("parameters", tool.get("inputSchema", {"type": "object", "properties": {}}))
    return {"type": "function", "function": {"name": tool["name"], "description": tool.get("description", ""),
                                             "parameters": parameters}}


def load_tools(path: Path | None) -> list[dict[str, Any]]:
    path = path or HERE / "custom_tools.json"
    return [openai_tool(tool) for tool in json.loads(path.read_text())]


def describe(message: Any) -> str:
    calls = [f"{c.function.name}({c.function.arguments})" for c in message.tool_calls or ()]
    return ", ".join(calls) or f"answer: {message.content!r}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default=os.environ.get("TOOLFORMER_ROUTER_API_KEY", "none"))
    parser.add_argument("--tools", type=Path, default=None, help="JSON list of tools")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    client = OpenAI(base_url=args.base_url, api_key=args.api_key)
    tools = load_tools(args.tools)
    model = client.models.list().data[0].id
    print(f"model {model}, {len(tools)} tools")

    # 1. One request per query: the router calls a tool or answers in text.
    for query in QUERIES:
        response = client.chat.completions.create(model=model, messages=[{"role": "user", "content": query}],
                                                  tools=tools, max_tokens=args.max_tokens)
        print(f"> {query}\n  {describe(response.choices[0].message)}  [{response.choices[0].finish_reason}]")

    # 2. A tool loop: force a call, "run" it, and send the result back for the next decision.
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUERIES[0]}]
    first = client.chat.completions.create(model=model, messages=messages, tools=tools, tool_choice="required",
                                           max_tokens=args.max_tokens)
    message = first.choices[0].message
    print(f"> {QUERIES[0]} (tool_choice=required)\n  {describe(message)}  [{first.choices[0].finish_reason}]")
    messages.append(message.model_dump(exclude_none=True))
    for tool_call in message.tool_calls or ():
        messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": '{"status": "ok"}'})
    after = client.chat.completions.create(model=model, messages=messages, tools=tools, max_tokens=args.max_tokens)
    print(f"> after the tool result\n  {describe(after.choices[0].message)}")

    # 3. Streaming: put the deltas together as they come.
    content, calls = "", {}
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUERIES[1]}],
                                            tools=tools, max_tokens=args.max_tokens, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or ():
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
        if chunk.usage:
            usage = chunk.usage
            print(f"> streamed ({usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens)")
    print("  " + (", ".join(f"{c['name']}({c['arguments']})" for c in calls.values()) or f"answer: {content!r}"))


if __name__ == "__main__":
    main()
