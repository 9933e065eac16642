"""The public API: registry, overrides, batching, async, bad input, checkpoints, CLI."""

import asyncio
import json
import subprocess
import sys
import time

import pytest
import torch

from conftest import EMAIL, STOCK, TINY_ROUTER_CONFIG, WEATHER, finishing_sampler, tiny_backbone
from toolformer_router import (
    BackboneMismatchError,
    CheckpointError,
    DuplicateToolError,
    InvalidQueryError,
    InvalidToolError,
    QueryTooLongError,
    RouteResult,
    RouterConfig,
    SchemaTooLongError,
    ToolRouter,
    ToolRouterError,
    TooManyToolsError,
    normalize_tool,
    UnknownToolError,
)
from toolformer_router.decoding import DecodeOutput
from toolformer_router.messages import call_key, executed_calls, normalize_messages
from toolformer_router.schema import fit_tool_text, render_tool


def test_registry_add_remove_and_per_call_override(make_router):
    router = make_router()
    router.add_tools([WEATHER, EMAIL])
    assert [t.name for t in router.tools] == ["get_weather", "send_email"]
    result = router.route("weather in Paris?", tools=[STOCK], tool_choice="required", max_new_tokens=40,
                          logits_processor=finishing_sampler(router.tokenizer, 0))
    assert result.calls and [c.name for c in result.calls] == ["stock.price"] * len(result.calls)
    assert [t.name for t in router.tools] == ["get_weather", "send_email"]  # the override changed nothing
    router.remove_tools(["get_weather"])
    assert [t.name for t in router.tools] == ["send_email"]
    with pytest.raises(UnknownToolError, match="nope"):
        router.remove_tools(["send_email", "nope"])
    assert [t.name for t in router.tools] == ["send_email"]  # nothing removed on error
    result = router.route("email bob", tool_choice="required", max_new_tokens=60,
                          logits_processor=finishing_sampler(router.tokenizer, 1))
    assert result.calls and all(c.name == "send_email" for c in result.calls)
    assert result.usage.active_tools == 1 and result.usage.gist_tokens == router.config.num_gists
    assert len({c.id for c in result.calls}) == len(result.calls)


def _leaves(value):
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def test_routing_builds_no_autograd_graph(make_router, monkeypatch):
    """Tool encoding, selection (encoder pass, selector, clause plans) and decoding run without autograd, even when
    the caller has gradients enabled: no module's forward pass runs under grad mode or returns a tensor that
    requires grad (so a route holds no graph and no activations for a backward pass), the caller's grad mode is
    as it was afterwards, and the result holds plain Python values only (no tensor), so it round-trips as JSON."""
    router = make_router()
    assert any(p.requires_grad for p in router.model.parameters())  # a forward pass under grad would build a graph
    seen: list[bool] = []
    selection_scores = router.selection.scores

    def recording(*args, **kwargs):
        seen.append(torch.is_grad_enabled())
        return selection_scores(*args, **kwargs)

    forwards: list[tuple[str, bool, bool]] = []  # (module, grad mode, an output requires grad)

    def record_forward(module, args, output):
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        forwards.append((type(module).__name__, torch.is_grad_enabled(),
                         any(torch.is_tensor(t) and t.requires_grad for t in outputs)))

    monkeypatch.setattr(router.selection, "scores", recording)
    hook = torch.nn.modules.module.register_module_forward_hook(record_forward)
    try:
        with torch.enable_grad():
            called = router.route("weather in Paris?", tools=[WEATHER, STOCK], tool_choice="required",
                                  max_new_tokens=40, logits_processor=finishing_sampler(router.tokenizer, 0))
            answered = router.route("weather in Paris?", tools=[WEATHER, STOCK], max_new_tokens=8)
            assert torch.is_grad_enabled()  # the caller's mode, restored
    finally:
        hook.remove()
    assert seen and not any(seen)
    assert len(forwards) > 100 and {"Linear", "Embedding"} <= {name for name, _, _ in forwards}
    assert [f for f in forwards if f[1] or f[2]] == []
    assert called.calls and called.argument_grounding is not None and type(answered.call_margin) is float
    for result in (called, answered):
        assert all(type(leaf) in (str, int, float, bool, type(None)) for leaf in _leaves(result.model_dump()))
        assert RouteResult.model_validate_json(result.model_dump_json()) == result


@pytest.mark.parametrize(
    "bad_tools, error",
    [
        ([WEATHER, {"name": "", "parameters": {}}], InvalidToolError),
        ([WEATHER, {"name": "x", "parameters": {"type": "object", "properties": {"a": {"type": 7}}}}], InvalidToolError),
        ([EMAIL, EMAIL], DuplicateToolError),
        ([{"name": "huge", "parameters": {"type": "object", "properties": {
            f"p{i}": {"type": "string", "enum": [f"value_{j}" for j in range(20)]} for i in range(10)}}}],
         SchemaTooLongError),
        ([{"name": "n", "parameters": {"type": "object", "properties": {"a": {"type": "integer",
                                                                               "enum": ["x"]}}, "required": ["a"]}}], InvalidToolError),  # unsatisfiable
    ],
)
def test_failed_add_tools_leaves_the_registry_unchanged(make_router, bad_tools, error):
    router = make_router()
    router.add_tools([STOCK])
    before = router.tools
    with pytest.raises(error):
        router.add_tools(bad_tools)
    assert router.tools == before
    still = router.route("x", tool_choice="required", max_new_tokens=2)  # still usable, with the same tools
    assert still.usage.active_tools == 1 and still.raw.startswith('[{"name":"stock.price","arguments":{')


def test_schema_texts_are_counted_in_a_batch_memoised_and_shared_prepared(make_router):
    router = make_router(max_schema_tokens=64)
    long = {"name": "long_one", "description": "Look a word up " + "in a large dictionary " * 30,
            "parameters": {"type": "object", "properties": {"word": {"type": "string", "description": "it"}}}}
    huge = {"name": "huge", "parameters": {"type": "object", "properties": {
        f"p{i}": {"type": "string", "enum": [f"value_{j}" for j in range(20)]} for i in range(10)}}}
    tools = router.prepare_tools([WEATHER, long, EMAIL])
    texts = router.tool_texts(tools)
    assert texts == [fit_tool_text(t, router.count_tokens_many, 64) for t in tools]
    assert texts[0] == render_tool(tools[0]) and texts[1] != render_tool(tools[1])  # only the long one is cut
    assert all(router.count_tokens(text) <= 64 for text in texts)
    with pytest.raises(SchemaTooLongError, match="huge"):
        router.prepare_tools([huge])  # before the grammar: a too-long tool costs one token count
    with pytest.raises(SchemaTooLongError, match="huge"):
        router.tool_texts([*router.prepare_tools([STOCK]), normalize_tool(huge)])
    assert (router.prepare_tools([STOCK])[0].schema_hash, 64) in router._tool_texts  # kept though a later one raised
    calls = []
    router.count_tokens_many = lambda batch: calls.append(batch) or []
    assert router.tool_texts(tools) == texts and calls == []  # memoised: nothing counted again
    other = make_router(seed=1)
    assert other.prepare_tools([WEATHER])[0] is tools[0]  # normalised and grammar-checked once per process


def test_too_many_tools(make_router):
    router = make_router(max_tools=3)
    tools = [{"name": f"tool_{i}", "parameters": {}} for i in range(4)]
    with pytest.raises(TooManyToolsError, match="max_tools=3"):
        router.add_tools(tools)
    with pytest.raises(TooManyToolsError):
        router.route("hi", tools=tools)
    router.add_tools(tools[:3])
    with pytest.raises(TooManyToolsError):
        router.add_tools(tools[3:])
    assert len(router.tools) == 3


@pytest.mark.parametrize(
    "query, error, message",
    [
        ("", InvalidQueryError, "empty"),
        ("   ", InvalidQueryError, "empty"),
        ([], InvalidQueryError, "non-empty"),
        (b"caf\xe9", InvalidQueryError, "UTF-8"),
        ("bad \udcff surrogate", InvalidQueryError, "UTF-8"),
        ([{"role": "wizard", "content": "hi"}], InvalidQueryError, "role"),
        ([{"role": "system", "content": "only a system prompt"}], InvalidQueryError, "no non-empty"),
        ("word " * 5000, QueryTooLongError, "tokens"),
        (42, InvalidQueryError, "non-empty string"),
    ],
)
def test_bad_queries_raise_typed_errors(router_family, query, error, message):
    with pytest.raises(error, match=message):
        router_family.route(query, tools=[WEATHER])
    assert issubclass(error, ToolRouterError)


def test_chat_messages_with_tool_calls_and_results_are_accepted(make_router):
    router = make_router()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather in Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "args": {"city": "Rome"},
                                                              "id": "call_1"}]},
        {"role": "tool", "content": "18 C, sunny", "name": "get_weather"},
    ]
    prompt_ids = router.prompt_ids(router._request(messages, [WEATHER], None, True, 8).messages)
    prompt = router.tokenizer.decode(prompt_ids)
    assert "Be brief." in prompt and '"city":"Rome"' in prompt and "18 C, sunny" in prompt
    result = router.route(messages, tools=[WEATHER], tool_choice="required", max_new_tokens=40,
                          logits_processor=finishing_sampler(router.tokenizer, 0))
    assert result.calls and result.usage.input_tokens == len(prompt_ids)  # routed on that whole conversation


def test_route_batch_returns_one_result_per_query_in_order(make_router):
    router = make_router()
    router.add_tools([WEATHER, EMAIL, STOCK])
    queries = ["weather in Paris?", "send an email to bob", "stock price of ACME"]
    batched = router.route_batch(queries, tool_choice="required", max_new_tokens=10)
    expected = [router.route(q, tool_choice="required", max_new_tokens=10).raw for q in queries]
    assert len(set(expected)) == len(queries)  # the selector names a different tool for each: order shows
    assert [r.raw for r in batched] == expected


async def test_aroute_batches_concurrent_requests_without_blocking_the_loop(make_router):
    router = make_router()
    router.add_tools([WEATHER, EMAIL, STOCK])
    sizes: list[int] = []
    original = router._route_requests

    def recording(requests, logits_processor=None):
        sizes.append(len(requests))
        time.sleep(0.05)  # a slow device: the loop must keep running meanwhile
        return original(requests, logits_processor)

    router._route_requests = recording
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    queries = [["weather in Paris?", "send an email to bob", "stock price of ACME"][i % 3] + f" ({i})"
               for i in range(12)]
    results = await asyncio.gather(*(router.aroute(q, tool_choice="required", max_new_tokens=4) for q in queries))
    tick_task.cancel()
    expected = [router.route(q, tool_choice="required", max_new_tokens=4).raw for q in queries]
    assert len(set(expected)) >= 3  # different answers: a mix-up would show
    assert [r.raw for r in results] == expected  # each answer belongs to its request
    assert max(sizes) > 1  # concurrent requests shared a batch
    assert ticks >= 5
    router.close()


async def test_aroute_errors_and_cancellation_do_not_disturb_others(make_router):
    router = make_router()
    with pytest.raises(InvalidQueryError):
        await router.aroute("", tools=[WEATHER])
    slow = asyncio.create_task(router.aroute("cancel me", tools=[WEATHER], tool_choice="none", max_new_tokens=30))
    others = [asyncio.create_task(router.aroute(f"q{i}", tools=[EMAIL], tool_choice="none", max_new_tokens=3))
              for i in range(4)]
    await asyncio.sleep(0)
    slow.cancel()
    done = await asyncio.gather(*others)
    assert [r.raw for r in done] == [router.route(f"q{i}", tools=[EMAIL], tool_choice="none", max_new_tokens=3).raw
                                     for i in range(4)]  # the same answers as routed alone
    with pytest.raises(asyncio.CancelledError):
        await slow
    router.close()


def _save_tiny_backbone(folder, tokenizer, family="llama", seed=0):
    backbone = tiny_backbone(family, len(tokenizer), seed)
    backbone.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return backbone


def test_checkpoint_round_trip_and_clear_errors(tmp_path, tokenizer):
    backbone_dir = tmp_path / "backbone"
    _save_tiny_backbone(backbone_dir, tokenizer)
    thresholds = {20: {"call_bias": 0.5}, 200: {"call_bias": 1.5, "min_request_coverage": 0.2}}
    router = ToolRouter.from_backbone(str(backbone_dir), config=RouterConfig(
        **TINY_ROUTER_CONFIG, thresholds_by_tool_count=thresholds))
    with torch.no_grad():
        for block in router.model.cross_attention.values():
            block.gate.fill_(0.3)
    checkpoint = router.save_pretrained(tmp_path / "ckpt")
    assert ToolRouter.from_pretrained(checkpoint, disk_cache=False).save_pretrained(tmp_path / "again")  # int keys
    again = ToolRouter.from_pretrained(tmp_path / "again", disk_cache=False).config
    assert again.call_thresholds(200) == router.config.call_thresholds(200) != router.config.call_thresholds(20)
    size = sum(f.stat().st_size for f in checkpoint.iterdir())
    assert size < 2_000_000  # only the new modules, not the backbone
    loaded = ToolRouter.from_pretrained(checkpoint, disk_cache=False)
    for name, tensor in router.model.cross_attention.state_dict().items():
        assert torch.equal(loaded.model.cross_attention.state_dict()[name], tensor)
    query = "weather?"
    assert loaded.route(query, tools=[WEATHER], max_new_tokens=8).raw == router.route(
        query, tools=[WEATHER], max_new_tokens=8).raw

    weights = checkpoint / "router.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ToolRouter.from_pretrained(checkpoint, disk_cache=False)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        ToolRouter.from_pretrained(tmp_path / "nowhere", disk_cache=False)


def test_checkpoint_missing_tensor_nan_weights_and_other_backbone_are_rejected(tmp_path, tokenizer):
    from safetensors.torch import load_file, save_file

    backbone_dir = tmp_path / "backbone"
    _save_tiny_backbone(backbone_dir, tokenizer)
    router = ToolRouter.from_backbone(str(backbone_dir), config=RouterConfig(**TINY_ROUTER_CONFIG))
    checkpoint = router.save_pretrained(tmp_path / "ckpt")
    tensors = load_file(checkpoint / "router.safetensors")
    tensors.pop(next(k for k in tensors if k.startswith("gist_pooling")))
    save_file(tensors, checkpoint / "router.safetensors")
    with pytest.raises(CheckpointError, match="missing"):
        ToolRouter.from_pretrained(checkpoint, disk_cache=False)

    tensors = load_file(router.save_pretrained(checkpoint) / "router.safetensors")
    name = next(k for k in tensors if k.startswith("cross_attention"))
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    save_file(tensors, checkpoint / "router.safetensors")
    with pytest.raises(CheckpointError, match=f"{name} holds NaN"):
        ToolRouter.from_pretrained(checkpoint, disk_cache=False)

    router.save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["backbone_signature"]["hidden_size"] = 576
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneMismatchError, match="hidden_size"):
        ToolRouter.from_pretrained(checkpoint, disk_cache=False)
    config["backbone_signature"] = None
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no backbone_signature"):
        ToolRouter.from_pretrained(checkpoint, disk_cache=False)


def test_a_backbone_folder_with_pickled_weights_only_is_refused(tmp_path, tokenizer):
    from toolformer_router.errors import BackboneNotFoundError

    backbone_dir = tmp_path / "backbone"
    tiny = _save_tiny_backbone(backbone_dir, tokenizer)
    (backbone_dir / "model.safetensors").unlink()
    torch.save(tiny.state_dict(), backbone_dir / "pytorch_model.bin")  # a pickle
    with pytest.raises(BackboneNotFoundError, match="cannot load backbone"):
        ToolRouter.from_backbone(str(backbone_dir))


def test_a_saved_config_with_a_retired_option_loads_only_at_its_off_value(tmp_path):
    """A config.json written before options were retired (docs/policy.md, "Retired options") loads when it holds
    them at the values that turned them off, top-level or per tool count (the keys are dropped); any other value
    is refused with a ValueError naming the option."""
    from toolformer_router.checkpoint import read_config
    from toolformer_router.config import RETIRED_FIELDS

    current = RouterConfig(call_bias=0.5, thresholds_by_tool_count={20: {"call_bias": -1.0}}).model_dump(mode="json")
    old = {**current, **RETIRED_FIELDS, "thresholds_by_tool_count": {"20": {
        **current["thresholds_by_tool_count"]["20"], "no_tool_margin": None, "relevance_weight": 0.0}}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = read_config(tmp_path)
    assert loaded == RouterConfig.model_validate(current)
    assert not set(RETIRED_FIELDS) & set(loaded.model_dump())
    for name, value in (("later_call_candidates", 3), ("argument_filling", "schema"), ("relevance_weight", 8.0)):
        with pytest.raises(ValueError, match=name):
            RouterConfig.model_validate_json(json.dumps({**current, name: value}))
    with pytest.raises(ValueError, match=r"thresholds_by_tool_count\[20\]\.no_tool_margin"):
        RouterConfig.model_validate_json(json.dumps(
            {**current, "thresholds_by_tool_count": {"20": {"no_tool_margin": -5.3865}}}))


def test_cli_route_prints_a_route_result(tmp_path, tokenizer):
    backbone_dir = tmp_path / "backbone"
    _save_tiny_backbone(backbone_dir, tokenizer)
    router = ToolRouter.from_backbone(str(backbone_dir), config=RouterConfig(**TINY_ROUTER_CONFIG))
    checkpoint = router.save_pretrained(tmp_path / "ckpt")
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER, EMAIL]))
    out = subprocess.run(
        [sys.executable, "-m", "toolformer_router.cli", "route", "--tools", str(tools), "--checkpoint",
         str(checkpoint), "--no-disk-cache", "--tool-choice", "none", "--max-new-tokens", "5", "What now?"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = RouteResult.model_validate_json(out.stdout)
    assert result.calls == [] and result.usage.active_tools == 2
    bad = subprocess.run(
        [sys.executable, "-m", "toolformer_router.cli", "route", "--tools", str(tools), "--checkpoint",
         str(checkpoint), "--no-disk-cache", ""], capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode != 0 and "query is empty" in bad.stderr


def test_call_thresholds_by_tool_count():
    """`call_thresholds` takes the setting of the nearest calibrated tool count in log scale (the smaller on a
    tie), the top-level one without a map; `set_call_threshold` overrides every count; bad maps are refused."""
    config = RouterConfig(call_bias=0.5, thresholds_by_tool_count={
        "20": {"call_bias": -1.0, "min_tool_relevance": 0.2}, "200": {"call_bias": -2.0}})
    assert [config.call_thresholds(n).call_bias for n in (1, 20, 63, 64, 200, 5000)] == [-1.0, -1.0, -1.0, -2.0,
                                                                                          -2.0, -2.0]
    assert config.uses_tool_relevance and not RouterConfig(call_bias=0.5).uses_tool_relevance
    assert RouterConfig(call_bias=0.5).call_thresholds(20).call_bias == 0.5
    assert RouterConfig.model_validate_json(config.model_dump_json()) == config  # config.json round trip
    config.set_call_threshold("min_tool_relevance", None)
    assert not config.uses_tool_relevance
    with pytest.raises(ValueError, match="not a call/no-call setting"):
        config.set_call_threshold("max_tools", 3)
    # a count's set takes the top-level value of what it leaves unset
    config = RouterConfig(min_request_coverage=0.3, min_argument_grounding=0.5, thresholds_by_tool_count={
        "20": {"min_argument_grounding": 0.25, "min_tool_relevance": 0.2}, "200": {"min_request_coverage": 0.1}})
    assert [config.call_thresholds(n).min_argument_grounding for n in (5, 20, 200)] == [0.25, 0.25, 0.5]
    assert [config.call_thresholds(n).min_request_coverage for n in (20, 200)] == [0.3, 0.1]
    assert config.uses_tool_relevance  # through the 20-tool set alone: the top level has no relevance veto
    config.set_call_threshold("min_tool_relevance", None)
    assert not config.uses_tool_relevance
    with pytest.raises(ValueError, match="tool counts must be >= 1"):
        RouterConfig(thresholds_by_tool_count={0: {}})
    with pytest.raises(ValueError, match="less than or equal to 1"):
        RouterConfig(thresholds_by_tool_count={20: {"min_request_coverage": 2.0}})


def _scripted_decoder(router, texts: list[str]):
    """A stand-in for `router._decode` that answers each batch row with the next of `texts`, as token ids."""
    queue = list(texts)

    def decode(requests, logits_processor):
        outputs = []
        for _ in requests:
            ids = router.tokenizer(queue.pop(0), add_special_tokens=False)["input_ids"]
            outputs.append(DecodeOutput(token_ids=ids, stopped=True, call_margin=1.0))
        return outputs

    return decode


ROME_RAN = [
    {"role": "user", "content": "weather in Rome and in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18 C, sunny"},
]


def test_a_call_whose_result_is_in_the_turn_is_never_emitted_again(make_router, monkeypatch):
    router = make_router()
    rome, oslo = '{"name":"get_weather","arguments":{"city":"Rome"}}', '{"name":"get_weather","arguments":{"city":"Oslo"}}'
    monkeypatch.setattr(router, "_decode", _scripted_decoder(router, [f"[{rome},{oslo}]"]))
    result = router.route(ROME_RAN, tools=[WEATHER])
    assert [(c.name, c.arguments) for c in result.calls] == [("get_weather", {"city": "Oslo"})]

    # every call already ran: the router answers in text instead (a second, tool-free pass)
    monkeypatch.setattr(router, "_decode", _scripted_decoder(router, [f"[{rome}]", "It is 18 C and sunny in Rome."]))
    result = router.route(ROME_RAN, tools=[WEATHER])
    assert result.calls == [] and result.text == "It is 18 C and sunny in Rome."

    # a new user request starts a new turn: the same call may run again
    again = [*ROME_RAN, {"role": "assistant", "content": "18 C."}, {"role": "user", "content": "And now, Rome?"}]
    monkeypatch.setattr(router, "_decode", _scripted_decoder(router, [f"[{rome}]"]))
    assert [c.arguments for c in router.route(again, tools=[WEATHER]).calls] == [{"city": "Rome"}]

    # tool_choice "required" asks for a call: it is kept
    monkeypatch.setattr(router, "_decode", _scripted_decoder(router, [f"[{rome}]"]))
    assert [c.arguments for c in router.route(ROME_RAN, tools=[WEATHER], tool_choice="required").calls] == [
        {"city": "Rome"}]


def test_executed_calls_are_those_of_the_turn_with_results():
    messages = normalize_messages([
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "a", "args": {"x": 1}}]},
        {"role": "tool", "content": "1", "name": "a"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "b", "arguments": {"y": [1, 2]}}]},
        {"role": "tool", "content": "2", "name": "b"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "c", "arguments": "{}"}}]},
    ])
    assert executed_calls(messages) == [{"name": "b", "arguments": {"y": [1, 2]}}]  # c has no result yet
    assert call_key({"name": "b", "arguments": {"p": 1, "q": 2}}) == call_key({"name": "b", "arguments": {"q": 2, "p": 1}})
    assert call_key({"name": "b", "arguments": {"p": 1}}) != call_key({"name": "b", "arguments": {"p": 2}})


@pytest.mark.parametrize(("call", "message"), [
    ({"function": {"name": "a", "arguments": "{not json"}}, "not valid JSON"),
    ({"function": {"name": "a", "arguments": "[1]"}}, "must be a JSON object"),
    ({"arguments": {}}, "has no tool name"),
    ({"function": "a"}, "'function' must be an object"),
    ({"function": ["a"]}, "'function' must be an object"),
    ({"name": "a", "arguments": {1: "x"}}, "not JSON"),
    ({"name": "a", "arguments": {"x": {1, 2}}}, "not JSON"),
    ({"name": "a", "arguments": {"x": [1.5, float("nan")]}}, r"arguments\.x\[1\]: nan is not a JSON number"),
    ({"name": "a", "arguments": {"x": float("-inf")}}, "-inf is not a JSON number"),
])
def test_bad_earlier_calls_raise_a_clear_error(call, message):
    with pytest.raises(InvalidQueryError, match=message):
        normalize_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call]}])


@pytest.mark.parametrize("tool_calls", [5, {"name": "a", "arguments": {}}, "a", b"a"])
def test_tool_calls_that_are_not_a_list_raise_a_clear_error(tool_calls):
    with pytest.raises(InvalidQueryError, match="message 1 tool_calls must be a list"):
        normalize_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                                                              "tool_calls": tool_calls}])


def test_a_conversation_far_over_the_limit_is_refused_before_it_is_tokenized(make_router, monkeypatch):
    """Tokenizing takes about half a second a megabyte: a conversation of more bytes than the limit's tokens can
    hold is refused from its size; one just over the limit is still counted in tokens."""
    router = make_router()
    tokenized: list[int] = []
    tokenizer_type = type(router.tokenizer)
    call = tokenizer_type.__call__

    def counting(self, text=None, *args, **kwargs):
        tokenized.append(max(map(len, [text] if isinstance(text, str) else text or [""])))
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(tokenizer_type, "__call__", counting)
    with pytest.raises(QueryTooLongError, match="bytes"):
        router.route("weather in Paris " * 60_000, tools=[WEATHER])  # 1 MB
    assert max(tokenized, default=0) < 10_000  # at most the tool's schema, never the conversation
    with pytest.raises(QueryTooLongError, match="the conversation is 50[0-9][0-9] tokens"):
        router.route("word " * 5000, tools=[WEATHER])


def test_a_caller_whose_event_loop_closed_does_not_stop_the_batcher():
    """A caller that gave up and closed its event loop while its batch was being served: the other request of
    that batch is still answered (delivering to the closed loop must not end the worker thread)."""
    import threading
    import time as _time

    from toolformer_router.batching import RequestBatcher

    def serve(requests):
        _time.sleep(0.3)
        return [request * 2 for request in requests]

    batcher = RequestBatcher(serve, max_batch_size=4, wait_s=0.05)

    def abandon() -> None:
        loop = asyncio.new_event_loop()
        with pytest.raises(asyncio.TimeoutError):
            loop.run_until_complete(asyncio.wait_for(batcher.submit(1), 0.15))
        loop.close()  # before the batch is answered

    caller = threading.Thread(target=abandon)
    caller.start()
    _time.sleep(0.01)  # the abandoned request is first in the batch

    async def live():
        return await asyncio.wait_for(batcher.submit(2), 5)

    assert asyncio.run(live()) == 4
    caller.join()
    batcher.close()


def test_a_tool_registered_again_under_its_name_replaces_the_old_one(make_router):
    router = make_router()
    router.add_tools([WEATHER])
    changed = {**WEATHER["function"], "description": "Weather, in another words."}
    router.add_tools([changed])
    assert [t.name for t in router.tools] == ["get_weather"] and router.tools[0].description == changed["description"]
    with pytest.raises(InvalidToolError, match="list of tool definitions, got NoneType"):
        router.add_tools(None)
    router.remove_tools(["get_weather"])


def test_tools_encode_while_other_threads_count_tokens(make_router):
    """Encoding pads token lists itself: the tokenizer's padding setting is shared state, and a caller's
    `prepare_tools` counts tokens with the same tokenizer while the batching thread encodes (this raised
    "Unable to create tensor" in about one batch in three)."""
    import threading

    router = make_router()
    done = threading.Event()

    def count() -> None:
        while not done.is_set():
            router.count_tokens_many([f"word {'x ' * (i % 37)}" for i in range(20)])

    counters = [threading.Thread(target=count) for _ in range(2)]
    for thread in counters:
        thread.start()
    try:
        for round_ in range(40):
            tools = [{"name": f"tool_{round_}_{i}", "description": "does a thing " * (1 + (i * 7) % 23),
                      "parameters": {}} for i in range(8)]
            entries, _, misses = router.tool_memories(router.prepare_tools(tools))
            assert misses == 8 and len(entries) == 8
    finally:
        done.set()
        for thread in counters:
            thread.join()
