"""Grammar-constrained decoding: validity by construction, tool_choice, jump-forward, batching."""

import random

import torch

import orjson
import numpy
import pytest
from jsonschema import Draft202012Validator

from conftest import EMAIL, STOCK, WEATHER, bfcl_training_side_tools, finishing_sampler
from toolformer_router import CallThresholds, InvalidQueryError, UnknownToolError
from toolformer_router.grounding import ConversationText
from toolformer_router.messages import normalize_messages


def _validate(result, tools) -> None:
    """Every call names an active tool and its arguments validate against that tool's schema."""
    by_name = {t.name: t for t in tools}
    assert result.raw.startswith("[") == bool(result.calls)
    if not result.calls:
        assert result.text is not None and not result.text.startswith(("[", "{"))
        return
    parsed = orjson.loads(result.raw)
    assert [c["name"] for c in parsed] == [c.name for c in result.calls]
    for call in result.calls:
        assert call.name in by_name
        Draft202012Validator(by_name[call.name].parameters).validate(call.arguments)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_weights_always_produce_valid_calls_over_bfcl_schemas(make_router, tokenizer, seed):
    family = ("llama", "qwen2")[seed]
    router = make_router(family, seed=seed, max_schema_tokens=512)
    for block in router.model.cross_attention.values():  # let the random gists matter
        block.gate.data.fill_(1.0)
    catalog = router.prepare_tools(bfcl_training_side_tools(60))
    rng = random.Random(seed)
    bias = finishing_sampler(tokenizer, seed)
    queries, tool_sets = [], []
    for i in range(24):
        tool_sets.append(rng.sample(catalog, rng.choice([1, 3, 8, 20])))
        queries.append(rng.choice(["Book a table for two tonight", "what's 2+2", "Find files named *.py",
                                   "Turn on the lights in the kitchen please"]) + f" #{i}")
    results = []
    for i, (query, tools) in enumerate(zip(queries, tool_sets)):
        choice = ("required", "auto", tools[0].name)[i % 3]
        results.append(router.route(query, tools=tools, tool_choice=choice, max_new_tokens=300,
                                    logits_processor=bias))
    assert [r.raw[-200:] for r in results if r.raw.startswith("[") and r.finish_reason != "stop"] == []
    for result, tools in zip(results, tool_sets):
        _validate(result, tools)
    assert sum(bool(r.calls) for r in results) >= 16  # "required" and forced-name requests must call
    for i in range(0, 24, 3):
        assert results[i].calls
    for i in range(2, 24, 3):
        assert {c.name for c in results[i].calls} == {tool_sets[i][0].name}


def test_tool_choice_modes_are_enforced(router_family, tokenizer):
    router = router_family
    tools = router.prepare_tools([WEATHER, EMAIL, STOCK])
    sampler = finishing_sampler(tokenizer, 0)
    required = router.route("hello", tools=tools, tool_choice="required", max_new_tokens=200, logits_processor=sampler)
    assert required.calls and required.text is None
    same = router.route("hello", tools=tools, tool_choice={"type": "function", "function": {"name": "send_email"}},
                        max_new_tokens=200, logits_processor=sampler)
    assert same.calls and {c.name for c in same.calls} == {"send_email"}
    none = router.route("What is the weather in Paris?", tools=tools, tool_choice="none", max_new_tokens=8)
    assert not none.calls and none.text is not None
    single = router.route("x", tools=tools, tool_choice="any", parallel_tool_calls=False, max_new_tokens=200,
                          logits_processor=sampler)
    assert len(single.calls) <= 1 and single.raw.count('{"name":') == len(single.calls)
    with pytest.raises(UnknownToolError, match="not among the active tools"):
        router.route("x", tools=tools, tool_choice="delete_everything")


@pytest.mark.parametrize("tool_choice", [
    {"type": "function", "function": "get_weather"}, {"type": "function", "function": ["get_weather"]},
    {"type": "function"}, 5, ["get_weather"],
])
def test_a_malformed_tool_choice_raises_a_clear_error(tool_choice):
    from toolformer_router.grammar import resolve_tool_choice
    from toolformer_router.schema import normalize_tools

    with pytest.raises(UnknownToolError, match="unsupported tool_choice"):
        resolve_tool_choice(tool_choice, normalize_tools([WEATHER]))


def _state(token_texts):
    """A `CallListState` fed `token_texts` one by one (a string: one character per token)."""
    from toolformer_router.call_state import CallListState

    state = CallListState()
    for text in token_texts:
        state.feed(text)
    return state


def test_call_list_state_finds_a_listed_call_name_but_not_an_argument_called_name():
    def name_position(text):
        state = _state(text)
        return None if state.name_prefix is None else (state.names, state.name_prefix)

    assert name_position('[{"name": "get_w') == ([], "get_w")
    assert name_position('[{"name":"f","arguments":{"x":1}}, {"name": "') == (["f"], "")
    assert name_position('[{"name":"f","arguments":{"x":"}, {\\"name\\": \\"a"}}, {"name":"g') == (["f"], "g")
    assert name_position('[{"name":"f","arguments":{"user":{"name":"Bo') is None  # an argument
    assert name_position('[{"name":"f"') is None and name_position('[{"name":"f","arguments":{"name":"') is None
    assert name_position('Hello {"name": "x') is None  # not a call list
    assert name_position('[{"name":"f","arguments":{}},{"name":"g","arguments":{"name":"z"}},{"name":"') == (
        ["f", "g"], "")
    assert _state('[{"name":"f","arguments":{}},{"name":"g","arguments":{"name":"z"}}').names == ["f", "g"]


def _reference_calls(text: str, depth: int):
    """The calls of a call list's text cut at a list step of bracket `depth`, by parsing it closed."""
    try:
        calls = orjson.loads(text + "}" * (depth - 1) + "]")
    except orjson.JSONDecodeError:
        return None
    return calls if isinstance(calls, list) and all(isinstance(c, dict) for c in calls) else None


@pytest.mark.parametrize("seed", range(3))
def test_call_list_state_agrees_with_parsing_every_prefix(tokenizer, seed):
    """Fed token by token, the state's names and calls so far agree at every list step with what parsing the
    text written so far gives (random call lists, real tokenizer)."""
    from toolformer_router.call_state import CallListState

    rng = random.Random(seed)
    texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]

    def value(level=0):
        kind = rng.random()
        if kind < 0.3:
            return rng.choice(["Berlin", 'a"b', "x\\y", "Boston, MA", "", "[}]{,"])
        if kind < 0.55:
            return rng.choice([1, 5000, -3.5, True, None])
        if level < 2 and kind < 0.8:
            return [value(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["a", "name", "city"]): value(level + 1) for _ in range(rng.randint(0, 2))} if level < 2 \
            else "z"

    checked_steps = 0
    for _ in range(20):
        calls = [{"name": rng.choice(["get_weather", "send.email"]),
                  "arguments": {key: value() for key in rng.sample(["city", "x", "name"], rng.randint(0, 3))}}
                 for _ in range(rng.randint(1, 3))]
        ids = tokenizer(orjson.dumps(calls).decode(), add_special_tokens=False)["input_ids"]
        state, written = CallListState(), ""
        for token in ids:
            state.feed(texts[token])
            written += texts[token]
            assert state.is_call
            step = state.list_step()
            if step is not None:
                assert state.calls_so_far() == _reference_calls(written, step), written
                checked_steps += 1
            assert state.names == [call["name"] for call in calls][: len(state.names)], written
        assert state.names == [call["name"] for call in calls]
        assert state.depth == 0 and state.calls_so_far() is None  # the list closed: nothing to cut
    assert checked_steps > 50


def test_call_naming_spells_the_first_name_then_the_planned_ones():
    from toolformer_router.decoding import DecodeRequest, DecodingRules, TokenClasses

    texts = ['[{"name":"', "get", "_", "weather", "stock", ".price", '"', "get_", "st", '",', "x", '"}',
             '"arguments":{}},{"name":"', "send"]
    rules, allowed = DecodingRules(TokenClasses(texts)), torch.ones(len(texts), dtype=torch.bool)

    def kept(ids, first, planned=()):
        request = DecodeRequest([], torch.zeros(0), None, 100, first_call_tool=first, planned_call_tools=planned)
        steered, _ = rules.steer(_state(texts[i] for i in ids), request, allowed, remaining=100, budget=100)
        return None if steered is allowed else [texts[i] for i in steered.nonzero().flatten().tolist()]

    assert kept([0], "get_weather") == ["get", "get_"]
    assert kept([0, 7], "get_weather") == ["weather"]
    assert kept([0, 1, 2, 3], "get_weather") == ['"', '",', '"}', texts[12]]  # the name is complete: its quote
    assert kept([0], "stock.price") == ["stock", "st"]
    assert rules.spell("", ["get_weather"], allowed & ~torch.tensor([i in (1, 7) for i in range(len(texts))])) \
        is None  # the grammar rules the name out: the decoder's choice stands
    assert kept([0, 4, 5, 6], "get_weather") is None  # past the first name
    assert kept([10], "get_weather") is None  # a text answer
    second_call = [0, 4, 5, 9, 12]
    assert kept(second_call, "stock.price") is None  # later calls are free without a plan
    assert kept([0], None) is None  # the first call is free without a selection
    planned = ("get_weather", "stock.price")  # a plan names its tools not named yet, in order
    assert kept(second_call, "x", planned) == ["get", "get_"]  # call 2 of [stock.price, …]
    assert kept([0, 1, 2, 3, 9, 12], "x", planned) == ["stock", "st"]
    assert kept([0, 4, 5, 9, 12, 1, 2, 3, 9, 12], "x", planned) is None  # all planned tools called: free


def test_selector_names_the_first_call_and_decoder_mode_does_not_depend_on_it(make_router, tokenizer):
    router = make_router()
    tools = router.prepare_tools([WEATHER, EMAIL, STOCK] + bfcl_training_side_tools(12))
    queries = ["weather in Paris", "mail bob", "AAPL price", "book a flight", "hello there", "what time is it"]
    first_name = lambda raw: orjson.loads(raw.split(',"arguments"', 1)[0] + "}]")[0]["name"]
    firsts = []
    for seed, query in enumerate(queries):
        best = router.rank_tools(query, tools)[0][0]
        result = router.route(query, tools=tools, tool_choice="required", max_new_tokens=200,
                              logits_processor=finishing_sampler(tokenizer, seed))
        assert first_name(result.raw) == best, (query, best, result.raw)
        firsts.append(best)
    router.config.tool_selection = "decoder"
    free = [first_name(router.route(q, tools=tools, tool_choice="required", max_new_tokens=200,
                                    logits_processor=finishing_sampler(tokenizer, seed)).raw)
            for seed, q in enumerate(queries)]
    assert free != firsts  # the random decoder names other tools: the steering above did the naming
    forced = router.route("x", tools=tools, tool_choice="send_email", max_new_tokens=200,
                          logits_processor=finishing_sampler(tokenizer, 0))
    assert {c.name for c in forced.calls} == {"send_email"}


TOPICS = ["weather", "email", "stock", "flight", "hotel", "music", "timer", "lights", "news", "recipe"]


def topic_tools() -> list[dict]:
    """One argument-less `<topic>_now` tool per `TOPICS` entry."""
    return [{"name": f"{topic}_now", "description": f"Everything about {topic}.",
             "parameters": {"type": "object", "properties": {}}} for topic in TOPICS]


def listed_names(router, tokenizer, query: str, seed: int) -> list[str]:
    """The names of a required call list over `topic_tools()`, sampled with a push on "," (which can only open
    the next call), so lists run long."""
    tools = topic_tools()
    more_calls = torch.zeros(len(tokenizer))
    for token, i in tokenizer.get_vocab().items():
        more_calls[i] = 12.0 if tokenizer.convert_tokens_to_string([token]).startswith(",") else 0.0
    sampler = finishing_sampler(tokenizer, seed)
    result = router.route(query, tools=tools, tool_choice="required", max_new_tokens=80,
                          logits_processor=lambda logits: sampler(logits) + more_calls)
    return [call.name for call in result.calls]


def test_end_with_plan_ends_a_list_once_its_planned_tools_are_called(make_router, tokenizer):
    router = make_router(lexical_weight=50.0, clause_plan_gap=0.0)
    requests = {"What is the weather today? Then play some music.": {"weather_now", "music_now"},
                "Check the stock. Also, any news?": {"stock_now", "news_now"}}

    def runs() -> dict[tuple[str, int], list[str]]:
        return {(q, seed): listed_names(router, tokenizer, q, seed) for q in requests for seed in range(3)}

    long_lists = runs()
    assert any(len(names) > 2 for names in long_lists.values()), long_lists  # "," pushed: lists run on
    router.config.end_with_plan = True
    ended = runs()
    assert all(len(names) == 2 and set(names) == requests[q] for (q, _), names in ended.items()), ended
    assert all(names[:2] == long_lists[key][:2] for key, names in ended.items())  # the same calls, cut


def test_split_clauses_cuts_sentences_and_connectives():
    from toolformer_router.selection import split_clauses

    assert split_clauses("Find a movie with Bret McKenzie. Could you suggest options? Also, book a table for 2") == [
        "Find a movie with Bret McKenzie.", "Could you suggest options?", "book a table for 2"]
    assert split_clauses("Get the weather in Paris, and then the news; play jazz too") == [
        "Get the weather in Paris", "the news", "play jazz too"]
    assert split_clauses("Weather in Paris and Rome") == ["Weather in Paris and Rome"]
    assert split_clauses("Pay $3.50 to Bo, also") == ["Pay $3.50 to Bo"]


def test_clause_plan_names_each_requested_tool_before_repeating_one(make_router, tokenizer):
    router = make_router(lexical_weight=50.0)
    tools = router.prepare_tools(topic_tools())
    requests = {"What is the weather today? Then play some music.": {"weather_now", "music_now"},
                "Check the stock. Also, any news?": {"stock_now", "news_now"},
                "Find a hotel; and a flight": {"hotel_now", "flight_now"}}

    first_two = lambda query, seed: listed_names(router, tokenizer, query, seed)[:2]  # noqa: E731

    router.config.clause_plan_gap = 0.0
    planned = {(q, seed): first_two(q, seed) for q in requests for seed in range(3)}
    assert all(set(names) == requests[q] for (q, _), names in planned.items()), planned
    no_push = {q: [call.name for call in router.route(q, tools=tools, tool_choice="required", max_new_tokens=80,
                                                      logits_processor=finishing_sampler(tokenizer, 0)).calls]
               for q in requests}
    assert all(set(names[:2]) == requests[q] for q, names in no_push.items()), no_push  # the plan kept lists going
    router.config.clause_plan_gap = 1e9  # no clause leads by that much: no plan
    conversations = [[{"role": "user", "content": q}] for q in requests]
    assert router.selection.clause_plans(conversations, [tools] * 3, [router._request_memory(tools)[1]] * 3,
                                         [True] * 3) == [()] * 3
    router.config.clause_plan_gap = None
    free = {(q, seed): first_two(q, seed) for q in requests for seed in range(3)}
    assert any(set(names) != requests[q] for (q, _), names in free.items())  # the plan did the naming


def test_call_list_state_measures_calls_for_the_closing_rules():

    texts = ["[", '{"name":"f","arguments":{', '"x":"', "a,b", '"', "}", "}", ",", "}},", '"}']

    def state(ids):
        return _state(texts[i] for i in ids)

    one_call = [0, 1, 2, 3, 4, 5, 6]  # [{"name":"f","arguments":{"x":"a,b"}}  — a call of 6 tokens
    assert (state(one_call).depth, state(one_call).longest_call) == (1, 6)
    assert state(one_call).list_full(9, reserve=4) and not state(one_call).list_full(10, reserve=4)
    assert state(one_call[:-1]).list_full(8, reserve=4)  # its arguments closed (5 tokens): "}" then "]"
    assert not state(one_call[:-2]).list_full(1, reserve=4)  # arguments still open: the closing reserve's job
    assert not state(one_call[:4]).list_full(1, reserve=4)  # inside a string ("a,b" is no list comma)
    assert not state([0, 1]).list_full(1, reserve=4)  # no complete call yet: nothing to measure
    second = one_call + [7, 1, 2, 3, 4, 8]  # a second call of 6 tokens, closed with "}},"
    assert (state(second).depth, state(second).longest_call) == (1, 6)
    assert state(one_call[:4]).in_string


def test_list_rules_find_the_tokens_that_go_on_with_a_call_list_or_end_it():
    from toolformer_router.decoding import DecodeRequest, DecodingRules, TokenClasses

    texts = ["[", '{"name":"f","arguments":{', '"x":"', "a,b", '"', "}", "}", ",", "}},", "}]", "]", ", {", "},", "}}]",
             '"name":"g","arguments":{']
    tokens = TokenClasses(texts)
    listed = lambda mask: [texts[i] for i in mask.nonzero().flatten().tolist()]  # noqa: E731

    def state(ids):
        return _state(texts[i] for i in ids)

    goes_on = lambda ids: listed(tokens.continuers[state(ids).list_step()])  # noqa: E731
    ends = lambda ids: listed(tokens.enders[state(ids).list_step()])  # noqa: E731
    assert goes_on([0, 1, 2, 3, 4]) == ["}},"] and ends([0, 1, 2, 3, 4]) == ["}}]"]  # in the arguments: depth 3
    assert goes_on([0, 1, 2, 3, 4, 5]) == ["},"] and ends([0, 1, 2, 3, 4, 5]) == ["}]"]  # arguments closed
    assert goes_on([0, 1, 2, 3, 4, 5, 6]) == [",", ", {"] and ends([0, 1, 2, 3, 4, 5, 6]) == ["]"]  # call closed
    assert state([0, 1, 2, 3]).list_step() is None  # inside a string ("a,b" is no list comma)
    assert state([0]).list_step() is None  # no call yet

    rules, allowed = DecodingRules(tokens, end_with_plan=True), torch.ones(len(texts), dtype=torch.bool)

    def steered(ids, planned, enumerations=()):
        request = DecodeRequest([], torch.zeros(0), None, 100, planned_call_tools=planned, enumerations=enumerations)
        return listed(rules.steer(state(ids), request, allowed, remaining=100, budget=100)[0])

    one_call = [0, 1, 2, 3, 4, 5, 6]
    two_calls = one_call + [11, 14, 5, 6]  # ..., {"name":"g","arguments":{}}
    assert "]" not in steered(one_call, ("f", "g"))  # "g" planned, not called yet: the list goes on
    assert "," in steered(one_call, ("f", "g"))
    assert steered(one_call, ("f",)) == texts  # a plan of one tool leaves the list free
    assert "," not in steered(two_calls, ("f", "g")) and "]" in steered(two_calls, ("f", "g"))  # plan done: end
    assert "}," not in steered(two_calls[:-1], ("g", "f"))  # the last call's arguments closed: end too
    assert "," in steered(two_calls, ("f", "g"), (("a,b", "c"),))  # "a,b" taken, "c" not yet: may go on
    assert "]" not in steered(one_call, ("f",), (("a,b", "c"),))  # the new call took an item, one is left


def test_drop_unstated_optionals_removes_the_optional_values_nobody_gave(make_router, tokenizer):
    router = make_router()
    tool = {"name": "get_weather", "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"note": {"type": "string"},
                                                           "city": {"type": "string", "enum": ["Paris", "Rome"]}},
                           "required": ["city"]}}
    query = "weather in Paris"

    def arguments(drop: bool) -> list[dict]:
        router.config.drop_unstated_optionals = drop
        return [router.route(query, tools=[tool], tool_choice="required", parallel_tool_calls=False,
                             max_new_tokens=60, logits_processor=finishing_sampler(tokenizer, seed)).calls[0].arguments
                for seed in range(6)]

    kept, dropped = arguments(False), arguments(True)
    router.config.drop_unstated_optionals = False
    made_up = [i for i, a in enumerate(kept) if "note" in a and not ConversationText([query]).mentions(a["note"])]
    assert made_up, kept  # the random model writes notes that share no word with the request
    assert dropped == [{k: v for k, v in a.items() if k != "note" or i not in made_up} for i, a in enumerate(kept)]


def test_a_list_is_closed_instead_of_opening_a_call_the_budget_cannot_hold(make_router, tokenizer):
    router = make_router()
    settings = {f"setting_number_{i}": {"type": "string", "enum": ["alpha_option", "beta_option"]} for i in range(4)}
    tool = {"name": "configure_device", "description": "Configure the device.",
            "parameters": {"type": "object", "properties": settings, "required": list(settings)}}
    more_calls = torch.zeros(len(tokenizer))  # enum values only: a "," can only separate keys or open a call
    for token, i in tokenizer.get_vocab().items():
        more_calls[i] = 30.0 if "," in tokenizer.convert_tokens_to_string([token]) else 0.0
    for seed in range(3):
        sampler = finishing_sampler(tokenizer, seed)
        result = router.route("configure", tools=[tool], tool_choice="required", max_new_tokens=120,
                              logits_processor=lambda logits: sampler(logits) + more_calls)
        # a call is ~55 tokens: a second would leave less than the 24-token reserve, so the list ends after one
        assert result.finish_reason == "stop" and len(result.calls) == 1, result.raw


def test_a_call_list_with_an_out_of_range_number_is_not_a_call():
    from toolformer_router.messages import parse_call_list as _parse_call_list

    assert _parse_call_list('[{"name":"f","arguments":{"x":-57.84e71836}}]') is None  # valid JSON, no double
    assert _parse_call_list('[{"name":"f","arguments":{"x":1.5e3}}]') == [{"name": "f", "arguments": {"x": 1500.0}}]


def test_jump_forward_feeds_forced_tokens_in_one_pass(make_router, tokenizer):
    router = make_router()
    passes = []
    original = router.model.decode

    def counting(input_ids, *args, **kwargs):
        passes.append(input_ids.shape[1])
        return original(input_ids, *args, **kwargs)

    router.model.decode = counting
    result = router.route("weather in Rome", tools=[WEATHER], tool_choice="get_weather", max_new_tokens=200,
                          logits_processor=finishing_sampler(tokenizer, 0))
    assert result.calls and result.usage.forced_tokens >= 8  # `[{"name":"get_weather","arguments":{"city` …
    assert len(passes) < result.usage.output_tokens  # fewer decoder passes than output tokens
    assert passes[0] > result.usage.input_tokens  # the prompt and the forced prefix went in together


def test_batched_decoding_matches_one_request_at_a_time(make_router):
    router = make_router("qwen2", seed=3)
    for block in router.model.cross_attention.values():
        block.gate.data.fill_(1.0)
    queries = ["weather in Oslo?", "email alice that the build is green and the release is out", "hi", "AAPL price"]
    tool_sets = [[WEATHER, EMAIL, STOCK], [EMAIL], [WEATHER, STOCK], [STOCK, WEATHER]]
    alone = [router.route(q, tools=t, tool_choice="auto", max_new_tokens=60) for q, t in zip(queries, tool_sets)]
    requests = [router._request(q, router.prepare_tools(t), "auto", True, 60) for q, t in zip(queries, tool_sets)]
    together = router._route_requests(requests)
    assert [r.raw for r in together] == [r.raw for r in alone]


def test_decode_stops_at_the_budget_and_reports_length(make_router):
    router = make_router()
    result = router.route("write a long story", tools=[EMAIL], tool_choice="none", max_new_tokens=5)
    assert result.finish_reason == "length" and result.usage.output_tokens == 5 and result.text is not None
    cut = router.route("email", tools=[EMAIL], tool_choice="required", max_new_tokens=3)
    assert cut.finish_reason == "length" and cut.calls == [] and cut.text is None


def test_a_text_budget_of_zero_only_decides(make_router, tokenizer):
    router = make_router()
    decided = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_text_tokens=0)
    assert decided.text == "" and decided.finish_reason == "stop" and decided.usage.output_tokens == 0
    call = router.route("email", tools=[EMAIL], tool_choice="required", max_new_tokens=200, max_text_tokens=0,
                        logits_processor=finishing_sampler(tokenizer, 0))
    assert call.calls  # calls are not affected
    with pytest.raises(ValueError, match="max_text_tokens"):
        router.route("hi", tools=[EMAIL], max_text_tokens=-1)
    for bad in (0, 10**9, 10**400, "12", 2.5, float("nan"), float("inf"), True, numpy.float32(2.5)):
        with pytest.raises(InvalidQueryError, match="max_new_tokens"):
            router.route("hi", tools=[EMAIL], max_new_tokens=bad)
    whole = router.route("hi", tools=[EMAIL], tool_choice="none", max_new_tokens=numpy.int64(3))
    assert whole.usage.output_tokens <= 3 and whole.text  # numpy integers are whole numbers


def test_tool_choice_none_writes_the_answer_in_one_tool_free_pass(make_router):
    """With tools active and tool_choice "none" the answer is the backbone's own: one pass, without the router's
    instructions or the tools (none is encoded), the same whichever tools are active."""
    router = make_router()
    answer = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=12)
    prompt = router.prompt_ids(normalize_messages("tell me a story"), router_instructions=False)
    assert answer.usage.input_tokens == len(prompt) and answer.usage.cache_misses == 0 and answer.text
    assert router.route("tell me a story", tools=[WEATHER, STOCK], tool_choice="none",
                        max_new_tokens=12).text == answer.text


def test_text_answers_have_their_own_budget_unless_the_request_sets_one(make_router, tokenizer):
    router = make_router(max_text_tokens=4)
    text = router.route("tell me a story", tools=[EMAIL], tool_choice="none")
    assert text.usage.output_tokens == 4 and text.finish_reason == "length"
    asked = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=7)
    assert asked.usage.output_tokens == 7 and asked.finish_reason == "length"  # max_tokens is honoured
    call = router.route("email", tools=[EMAIL], tool_choice="required", max_new_tokens=200,
                        logits_processor=finishing_sampler(tokenizer, 0))
    assert call.calls and call.usage.output_tokens > 4  # calls keep the full budget



def test_render_calls_is_exactly_what_the_grammar_accepts(make_router):
    from toolformer_router.grammar import render_calls

    router = make_router()
    tools = router.prepare_tools([WEATHER, EMAIL, STOCK])
    text = render_calls([("send_email", {"body": "hi", "to": "a@b.c"}), ("stock.price", {"days": 3, "ticker": "X"})],
                        tools)
    assert text == ('[{"name":"send_email","arguments":{"to":"a@b.c","body":"hi"}},'
                    '{"name":"stock.price","arguments":{"ticker":"X","days":3}}]')
    matcher = router.grammar.matcher(tools)
    assert matcher.consume_tokens(router.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert matcher.is_accepting()
    with pytest.raises(UnknownToolError):
        render_calls([("nope", {})], tools)


def _guarded(history, min_span):
    from toolformer_router.decoding import LoopGuard

    guard = LoopGuard(min_span=min_span)
    for token in history:
        guard.feed(token)
    return guard.vetoed()


def test_loop_guard_vetoes_a_third_copy_and_long_runs():
    item = [11, 12, 13, 14, 15]
    assert _guarded([5] + [0] * 6, 8) == set()  # "1000000" may go on: 7 zeros
    assert _guarded([5] + [0] * 7, 8) == {0}  # not an 8th
    clock = [0, 0, 58, 0, 0, 58, 0]  # "00:00:0" (digits are single tokens)
    assert _guarded(clock, 8) == {0} and _guarded(clock, 12) == set()
    assert _guarded([1] + item + item[:3], 8) == set()  # a list item given twice is fine
    assert _guarded([1] + item + item, 8) == {11}  # a third copy is not
    assert _guarded([1, 44, 1, 44, 1, 44], 8) == set() and _guarded([1, 44, 1, 44, 1, 44, 1], 8) == {44}
    assert _guarded([1, 2, 3, 4, 5, 6, 7, 8, 9], 8) == set()


def test_loop_guard_fed_token_by_token_agrees_with_rescanning_the_history():
    """The guard keeps each period's repeated tail up to date; rescanning the whole history gives the same."""
    from toolformer_router.decoding import LoopGuard

    def rescanned(history, min_span, max_period=48):
        n, vetoed = len(history), set()
        for period in range(1, min(max_period, n // 2) + 1):
            run = 0
            while run < n - period and history[n - 1 - run] == history[n - 1 - run - period]:
                run += 1
            if run + 1 + period >= max(2 * period + 1, min_span):
                vetoed.add(history[n - period])
        return vetoed

    rng, vetoes = random.Random(0), 0
    for _ in range(60):
        min_span, history = rng.choice([1, 4, 12]), []
        guard = LoopGuard(min_span=min_span)
        for _ in range(rng.randint(1, 120)):
            copy = history and rng.random() < 0.4
            token = history[-rng.randint(1, min(len(history), 50))] if copy else rng.randrange(rng.choice([2, 10]))
            history.append(token)
            guard.feed(token)
            assert guard.vetoed() == rescanned(history, min_span)
            vetoes += bool(guard.vetoed())
    assert vetoes > 100  # the histories do repeat


def _looping_sampler(tokenizer):
    """Greedy logits of a model stuck in a loop: "a" first, then a quote, then closing brackets."""
    bias = torch.zeros(len(tokenizer))
    for token, i in tokenizer.get_vocab().items():
        text = tokenizer.convert_tokens_to_string([token])
        bias[i] = 60.0 if text[:1] == '"' else 50.0 if text and not text.strip("]}") else 0.0
    bias[tokenizer.convert_tokens_to_ids("a")] = 100.0
    return lambda logits: logits + bias


@pytest.mark.parametrize(("min_span", "reserve", "expected"), [(0, 0, "cut"), (0, 24, "closed"), (12, 0, "stop")])
def test_looping_values_are_stopped_by_the_guard_or_closed_by_the_reserve(make_router, tokenizer, min_span,
                                                                          reserve, expected):
    router = make_router(loop_guard_min_span=min_span, closing_reserve_tokens=reserve)
    result = router.route("email", tools=[EMAIL], tool_choice="required", max_new_tokens=96,
                          logits_processor=_looping_sampler(tokenizer))
    if expected == "cut":  # the loop runs until the budget ends inside the call
        assert result.finish_reason == "length" and result.calls == [] and "a" * 60 in result.raw
        return
    _validate(result, router.prepare_tools([EMAIL]))
    assert result.calls and result.usage.output_tokens <= 96
    values = [v for v in result.calls[0].arguments.values()]
    if expected == "closed":  # a valid call, its last value cut short: reported as "length"
        assert result.finish_reason == "length" and "a" * 40 in result.raw
    else:
        assert result.finish_reason == "stop" and values and all(v and "a" * 12 not in v for v in values)


def test_no_call_answers_are_the_backbones_own_reply_without_the_tools(make_router, tokenizer):
    from toolformer_router.decoding import DecodeRequest
    from toolformer_router.router import _Request

    never_call = torch.zeros(len(tokenizer))
    for token, i in tokenizer.get_vocab().items():
        if tokenizer.convert_tokens_to_string([token]).startswith("["):
            never_call[i] = -1e4

    def processor(logits):
        return logits + never_call

    messages = [{"role": "user", "content": "hello there"}]
    answers = {}
    for enabled in (True, False):
        router = make_router(seed=5, answer_without_tools=enabled)
        for block in router.model.cross_attention.values():  # let the random gists matter
            block.gate.data.fill_(1.0)
        answers[enabled] = router.route(messages, tools=[EMAIL, WEATHER], max_new_tokens=20, logits_processor=processor)
    plain_prompt = router.prompt_ids(messages, router_instructions=False)
    routed_prompt = router.prompt_ids(messages)
    assert len(plain_prompt) != len(routed_prompt)  # no router system prompt: the template's default one
    matcher = router._matcher(_Request(messages, [], "none", True, 20, 20))
    (plain,) = router._decode([DecodeRequest(plain_prompt, router._memory_template(), matcher, 20,
                                             min(20, router.config.max_text_tokens))], processor)
    assert answers[True].text is not None and answers[True].call_margin is not None
    assert answers[True].raw == tokenizer.decode(plain.token_ids)
    assert answers[True].usage.input_tokens == len(routed_prompt) + len(plain_prompt)
    assert answers[False].usage.input_tokens == len(routed_prompt)


def _always_call(tokenizer):
    """A logits processor that makes the first token open a call list (every token starting with "[")."""
    always_call = torch.zeros(len(tokenizer))
    for token, i in tokenizer.get_vocab().items():
        if tokenizer.convert_tokens_to_string([token]).startswith("["):
            always_call[i] = 1e4

    def processor(logits):
        return logits + always_call

    return processor


def test_each_request_decides_with_the_thresholds_of_its_tool_count(make_router):
    """With `thresholds_by_tool_count`, a request's call bias is the one calibrated at the count nearest its
    own (log scale): a bias that turns one tool count's call into text leaves the other count's call alone."""
    router = make_router(seed=3, max_new_tokens=48)
    messages = [{"role": "user", "content": "weather in Paris"}]
    one, two = [WEATHER], [EMAIL, WEATHER]
    margins = {len(tools): router.route(messages, tools=tools, max_new_tokens=4).call_margin for tools in (one, two)}
    assert None not in margins.values()
    for text_at in (1, 2):  # at each count, a bias 1 below minus its margin answers, 1 above calls
        router.config.thresholds_by_tool_count = {
            count: CallThresholds(call_bias=-margin + (-1.0 if count == text_at else 1.0))
            for count, margin in margins.items()}
        for tools in (one, two):
            result = router.route(messages, tools=tools, max_new_tokens=4)
            assert result.raw.startswith("[") == (len(tools) != text_at), (text_at, len(tools), result.raw)
            assert result.call_margin == pytest.approx(margins[len(tools)])


def test_after_results_selection_plans_only_what_is_left(make_router):
    router = make_router(lexical_weight=50.0)  # the word match decides: the tiny selector is untrained
    tools = router.prepare_tools(topic_tools())
    gists = router._request_memory(tools)[1]
    request = {"role": "user", "content": "What is the weather today? Then play some music."}
    ran = [request, {"role": "assistant", "content": "", "tool_calls": [{"name": "weather_now", "arguments": {}}]},
           {"role": "tool", "name": "weather_now", "content": "sunny"}]
    router.config.clause_plan_gap = 0.0
    fresh, after_one = router.selection.select([[request], ran], [tools, tools], [gists, gists], [True, True])
    assert set(fresh.planned) == {"weather_now", "music_now"} and fresh.first is not None
    left = tuple(name for name in fresh.planned if name != "weather_now")
    assert after_one.planned == left and after_one.first == left[0]  # the plan's next tool, not a forced repeat
    done = [*ran[:1], {"role": "assistant", "content": "", "tool_calls": [
        {"name": "weather_now", "arguments": {}}, {"name": "music_now", "arguments": {}}]}, *ran[2:]]
    after_all = router.selection.select([done], [tools], [gists], [True])[0]
    assert after_all.first is None and after_all.planned == ()  # nothing left: no call is forced
