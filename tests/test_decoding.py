"""Grammar-constrained decoding: validity by construction, tool_choice, jump-forward, batching."""

import random

import torch

import orjson
import pytest
from jsonschema import Draft202012Validator

from conftest import EMAIL, STOCK, WEATHER, bfcl_training_side_tools, finishing_sampler
from toolformer_router import CallThresholds, UnknownToolError
from toolformer_router.grounding import ConversationText


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


def test_call_name_prefix_finds_a_listed_call_name_but_not_an_argument_called_name():
    from toolformer_router.decoding import call_name_prefix

    assert call_name_prefix('[{"name": "get_w') == ([], "get_w")
    assert call_name_prefix('[{"name":"f","arguments":{"x":1}}, {"name": "') == (["f"], "")
    assert call_name_prefix('[{"name":"f","arguments":{"x":"}, {\\"name\\": \\"a"}}, {"name":"g') == (["f"], "g")
    assert call_name_prefix('[{"name":"f","arguments":{"user":{"name":"Bo') is None  # an argument
    assert call_name_prefix('[{"name":"f"') is None and call_name_prefix('[{"name":"f","arguments":{"name":"') is None
    assert call_name_prefix('Hello {"name": "x') is None  # not a call list
    assert call_name_prefix('[{"name":"f","arguments":{}},{"name":"g","arguments":{"name":"z"}},{"name":"') == (
        ["f", "g"], "")


def test_call_name_steering_spells_the_first_name_then_one_of_the_later_candidates():
    from toolformer_router.decoding import CallNameSteering

    texts = ['[{"name":"', "get", "_", "weather", "stock", ".price", '"', "get_", "st", '",', "x", '"}',
             '"arguments":{}},{"name":"', "send"]
    steering, allowed = CallNameSteering(texts), torch.ones(len(texts), dtype=torch.bool)

    def kept(ids, first, later=None, planned=()):
        return [texts[i] for i in steering.restrict(ids, first, later, allowed, planned).nonzero().flatten().tolist()]

    assert kept([0], "get_weather") == ["get", "get_"]
    assert kept([0, 7], "get_weather") == ["weather"]
    assert kept([0, 1, 2, 3], "get_weather") == ['"', '",', '"}', texts[12]]  # the name is complete: its quote
    assert kept([0], "stock.price") == ["stock", "st"]
    no_get = allowed.clone()
    no_get[[1, 7]] = False  # the grammar rules the name out: the decoder's choice stands
    assert steering.restrict([0], "get_weather", None, no_get) is None
    assert steering.restrict([0, 4, 5, 6], "get_weather", None, allowed) is None  # past the first name
    assert steering.restrict([10], "get_weather", None, allowed) is None  # a text answer
    second_call = [0, 4, 5, 9, 12]
    assert steering.restrict(second_call, "stock.price", None, allowed) is None  # later calls free
    assert kept(second_call, "stock.price", frozenset({"stock.price", "get_weather"})) == ["get", "stock", "get_",
                                                                                           "st"]
    assert kept(second_call + [4], "stock.price", frozenset({"stock.price", "get_weather"})) == [".price"]
    assert steering.restrict([0], None, frozenset({"stock.price"}), allowed) is None  # the first call is free
    assert steering.restrict(second_call + [13], "x", frozenset({"stock.price"}), allowed) is None  # left behind
    # a plan names its tools not named yet first, then the later candidates apply
    planned = ("get_weather", "stock.price")
    assert kept(second_call[:-1] + [12], "x", None, planned) == ["get", "get_"]  # call 2 of [stock.price, …]
    assert kept([0, 1, 2, 3, 9, 12], "x", frozenset({"get_weather"}), planned) == ["stock", "st"]
    assert kept([0, 4, 5, 9, 12, 1, 2, 3, 9, 12], "x", frozenset({"stock.price"}), planned) == ["stock", "st"]
    assert steering.restrict([0, 4, 5, 9, 12, 1, 2, 3, 9, 12], "x", None, allowed, planned) is None  # then free


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


def test_later_calls_name_one_of_the_best_scored_tools(make_router, tokenizer):
    router = make_router(later_call_candidates=2)
    later_names = lambda query, seed: listed_names(router, tokenizer, query, seed)[1:]  # noqa: E731
    tools = topic_tools()
    queries = ["weather in Paris and mail bob", "AAPL price, then the news", "book a flight and a hotel"]
    best = {q: {name for name, _ in router.rank_tools(q, tools)[:2]} for q in queries}
    restricted = {(q, seed): later_names(q, seed) for q in queries for seed in range(3)}
    assert sum(map(len, restricted.values())) >= 6  # later calls were made
    assert all(set(names) <= best[q] for (q, _), names in restricted.items())
    router.config.later_call_candidates = 0
    free = {(q, seed): later_names(q, seed) for q in queries for seed in range(3)}
    assert any(not set(names) <= best[q] for (q, _), names in free.items())  # the candidates did the narrowing


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
    from toolformer_router.router import split_clauses

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
    assert router._clause_plans([router._request(q, tools, "auto", True, 80) for q in requests],
                                [router._request_memory(tools)[1]] * 3) == [()] * 3
    router.config.clause_plan_gap = None
    free = {(q, seed): first_two(q, seed) for q in requests for seed in range(3)}
    assert any(set(names) != requests[q] for (q, _), names in free.items())  # the plan did the naming


def test_closer_ends_a_list_that_could_not_hold_another_call():
    from toolformer_router.decoding import CallCloser, scan_call_list

    texts = ["[", '{"name":"f","arguments":{', '"x":"', "a,b", '"', "}", "}", ",", "}},", '"}']
    closer = CallCloser(texts, reserve=4)
    one_call = [0, 1, 2, 3, 4, 5, 6]  # [{"name":"f","arguments":{"x":"a,b"}}  — a call of 6 tokens
    assert scan_call_list(texts, one_call) == (False, 1, 6)
    assert closer.list_full(one_call, remaining=9) and not closer.list_full(one_call, remaining=10)
    assert closer.list_full(one_call[:-1], remaining=8)  # its arguments closed (5 tokens): "}" then "]"
    assert not closer.list_full(one_call[:-2], remaining=1)  # arguments still open: `engaged` handles it
    assert not closer.list_full(one_call[:4], remaining=1)  # inside a string ("a,b" is no list comma)
    assert not closer.list_full([0, 1], remaining=1)  # no complete call yet: nothing to measure
    second = one_call + [7, 1, 2, 3, 4, 8]  # a second call of 6 tokens, closed with "}},"
    assert scan_call_list(texts, second)[1:] == (1, 6)
    assert closer.preferred(one_call[:4]).tolist() == closer.string_closers.tolist()


def test_list_continuation_finds_the_tokens_that_go_on_with_a_call_list_or_end_it():
    from toolformer_router.decoding import ListContinuation

    texts = ["[", '{"name":"f","arguments":{', '"x":"', "a,b", '"', "}", "}", ",", "}},", "}]", "]", ", {", "},", "}}]",
             '"name":"g","arguments":{']
    continuation = ListContinuation(texts)
    listed = lambda mask: [texts[i] for i in mask.nonzero().flatten().tolist()]  # noqa: E731
    goes_on = lambda ids: listed(continuation.continuers[continuation.list_step(ids)])  # noqa: E731
    ends = lambda ids: listed(continuation.enders[continuation.list_step(ids)])  # noqa: E731
    assert goes_on([0, 1, 2, 3, 4]) == ["}},"] and ends([0, 1, 2, 3, 4]) == ["}}]"]  # in the arguments: depth 3
    assert goes_on([0, 1, 2, 3, 4, 5]) == ["},"] and ends([0, 1, 2, 3, 4, 5]) == ["}]"]  # arguments closed
    assert goes_on([0, 1, 2, 3, 4, 5, 6]) == [",", ", {"] and ends([0, 1, 2, 3, 4, 5, 6]) == ["]"]  # call closed
    assert continuation.list_step([0, 1, 2, 3]) is None  # inside a string ("a,b" is no list comma)
    assert continuation.list_step([0]) is None  # no call yet
    one_call = [0, 1, 2, 3, 4, 5, 6]
    assert continuation.plan_unfinished(one_call, ("f", "g")) and not continuation.plan_unfinished(one_call, ("f",))
    assert not continuation.plan_unfinished(one_call, ())
    two_calls = one_call + [11, 14, 5, 6]  # ..., {"name":"g","arguments":{}}
    assert continuation.plan_done(two_calls, 1, ("f", "g"), ())
    assert continuation.plan_done(two_calls[:-1], 2, ("g", "f"), ())  # the last call's arguments closed
    assert not continuation.plan_done(one_call, 1, ("f", "g"), ())  # "g" not called yet
    assert not continuation.plan_done(one_call, 1, ("f",), ())  # a plan of one tool does not end lists
    assert not continuation.plan_done(two_calls, 1, ("f", "g"), (("a,b", "c"),))  # "a,b" taken, "c" not yet


def test_list_bias_lengthens_call_lists(make_router, tokenizer):
    router = make_router()
    tool = {"name": "get_weather", "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                           "required": ["city"]}}
    counts = {}
    for bias in (0.0, 1000.0):
        router.config.list_bias = bias
        counts[bias] = [len(router.route("weather in Paris and Rome", tools=[tool], tool_choice="required",
                                         max_new_tokens=80, logits_processor=finishing_sampler(tokenizer, seed)).calls)
                        for seed in range(3)]
    router.config.list_bias = 0.0
    assert counts[0.0] == [1, 1, 1]  # the sampler favours "]" over ","
    assert all(count >= 2 for count in counts[1000.0]), counts
    # a list step is the only place the bias acts: the calls it adds are still valid calls of the tool
    assert counts[1000.0] != counts[0.0]


def test_drop_repeated_calls_keeps_the_first_of_each_call_a_list_repeats(make_router, tokenizer):
    router = make_router(list_bias=1000.0)  # lists run on over two allowed values: calls must repeat
    tool = {"name": "get_weather", "description": "Weather of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                           "required": ["city"]}}

    def lists(drop: bool) -> list[list[tuple[str, str]]]:
        router.config.drop_repeated_calls = drop
        results = [router.route("weather in Paris and Rome", tools=[tool], tool_choice="required",
                                max_new_tokens=80, logits_processor=finishing_sampler(tokenizer, seed))
                   for seed in range(3)]
        return [[(c.name, c.arguments["city"]) for c in result.calls] for result in results]

    repeated, dropped = lists(False), lists(True)
    router.config.drop_repeated_calls = False
    assert all(len(calls) > len(set(calls)) for calls in repeated), repeated
    assert dropped == [list(dict.fromkeys(calls)) for calls in repeated]  # the first of each, in order


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


@pytest.mark.parametrize("copy_bias", [0.0, 1000.0])
def test_copy_bias_makes_a_free_string_value_a_span_of_the_request(make_router, tokenizer, copy_bias):
    router = make_router(copy_bias=copy_bias)
    tool = {"name": "find_hotel", "description": "Hotels in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    query = "Find me a hotel in Zanzibar City, please."
    values = [router.route(query, tools=[tool], tool_choice="required", max_new_tokens=60,
                           logits_processor=finishing_sampler(tokenizer, seed)).calls[0].arguments["city"]
              for seed in range(3)]
    spans = [bool(value) and value.lower() in query.lower() for value in values]
    assert all(spans) if copy_bias else not any(spans), values


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
    from toolformer_router.router import _parse_call_list

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


def test_text_answers_have_their_own_shorter_budget(make_router, tokenizer):
    router = make_router(max_text_tokens=4)
    text = router.route("tell me a story", tools=[EMAIL], tool_choice="none", max_new_tokens=50)
    assert text.usage.output_tokens == 4 and text.finish_reason == "length"
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


def test_loop_guard_vetoes_a_third_copy_and_long_runs():
    from toolformer_router.decoding import LoopGuard

    guard, item = LoopGuard(min_span=8), [11, 12, 13, 14, 15]
    assert guard.vetoed([5] + [0] * 6) == set()  # "1000000" may go on: 7 zeros
    assert guard.vetoed([5] + [0] * 7) == {0}  # not an 8th
    clock = [0, 0, 58, 0, 0, 58, 0]  # "00:00:0" (digits are single tokens)
    assert LoopGuard(min_span=8).vetoed(clock) == {0} and LoopGuard(min_span=12).vetoed(clock) == set()
    assert guard.vetoed([1] + item + item[:3]) == set()  # a list item given twice is fine
    assert guard.vetoed([1] + item + item) == {11}  # a third copy is not
    assert guard.vetoed([1, 44, 1, 44, 1, 44]) == set() and guard.vetoed([1, 44, 1, 44, 1, 44, 1]) == {44}
    assert guard.vetoed([1, 2, 3, 4, 5, 6, 7, 8, 9]) == set()


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


def test_schema_argument_filling_decodes_calls_again_with_the_chosen_schemas(make_router, tokenizer):
    gists = make_router(seed=3)
    schema = make_router(seed=3, argument_filling="schema")
    tools = gists.prepare_tools([WEATHER, EMAIL, STOCK])
    first = gists.route("weather in Paris", tools=tools, tool_choice="required",
                        logits_processor=finishing_sampler(tokenizer, 0))
    second = schema.route("weather in Paris", tools=tools, tool_choice="required",
                          logits_processor=finishing_sampler(tokenizer, 0))
    assert first.calls and second.calls
    _validate(second, tools)
    assert {c.name for c in second.calls} <= {c.name for c in first.calls}  # selection stays the gists'
    chosen = [t for t in tools if t.name in {c.name for c in first.calls}]
    assert second.usage.input_tokens == first.usage.input_tokens + len(
        schema.prompt_ids([{"role": "user", "content": "weather in Paris"}], schema_tools=chosen))


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


def test_a_no_tool_selector_declines_calls_below_no_tool_margin(make_router, tokenizer):
    """With `selector_no_tool`, "auto" calls only where the best tool beats "no tool" by `no_tool_margin`;
    the decoder's call margin is still measured, and a required call is never declined."""
    processor = _always_call(tokenizer)
    router = make_router(seed=6, selector_no_tool=True, max_new_tokens=48)
    with torch.no_grad():
        router.model.selector.no_tool_bias.fill_(0.05)
    messages = [{"role": "user", "content": "weather in Paris"}]
    free = router.route(messages, tools=[EMAIL, WEATHER], logits_processor=processor)
    margin = free.selection_margin
    assert free.raw.startswith("[") and margin is not None and free.call_margin > 0
    scores = dict(router.rank_tools(messages, tools=[EMAIL, WEATHER]))  # lexical_weight 0: selector logits
    no_tool_logit = 0.05 * router.model.selector.logit_scale.exp().item()  # the "no tool" vector is still 0
    assert margin == pytest.approx(max(scores.values()) - no_tool_logit, abs=1e-4)
    for threshold, calls in ((margin - 0.01, True), (margin + 0.01, False)):
        router.config.no_tool_margin = threshold
        result = router.route(messages, tools=[EMAIL, WEATHER], logits_processor=processor)
        assert result.raw.startswith("[") == calls and result.call_margin == pytest.approx(free.call_margin)
        assert result.selection_margin == pytest.approx(margin)
    required = router.route(messages, tools=[EMAIL, WEATHER], tool_choice="required", logits_processor=processor)
    assert required.calls
    plain = make_router(seed=6)
    assert plain.route(messages, tools=[EMAIL, WEATHER], max_new_tokens=8).selection_margin is None
    with pytest.raises(ValueError, match="selector_no_tool"):
        make_router(seed=6, no_tool_margin=0.0)


def test_min_selection_score_declines_calls_to_a_tool_the_selector_scores_low(make_router, tokenizer):
    """`selection_score` is the selector's own logit for the first call's tool (the word match not added);
    "auto" calls only where it reaches `min_selection_score`, the call margin is measured either way, and a
    required call is never declined."""
    processor = _always_call(tokenizer)
    router = make_router(seed=6, max_new_tokens=48, lexical_weight=2.0)
    messages = [{"role": "user", "content": "weather in Paris"}]
    free = router.route(messages, tools=[EMAIL, WEATHER], logits_processor=processor)
    assert free.raw.startswith("[") and free.calls
    router.config.lexical_weight = 0.0
    logits = dict(router.rank_tools(messages, tools=[EMAIL, WEATHER]))
    router.config.lexical_weight = 2.0
    assert free.selection_score == pytest.approx(logits[free.calls[0].name], abs=1e-4)
    first, score = router.first_call_selection(messages, [EMAIL, WEATHER])
    assert first == free.calls[0].name and score == pytest.approx(free.selection_score, abs=1e-5)
    for threshold, calls in ((free.selection_score - 0.01, True), (free.selection_score + 0.01, False)):
        router.config.min_selection_score = threshold
        result = router.route(messages, tools=[EMAIL, WEATHER], logits_processor=processor)
        assert result.raw.startswith("[") == calls and result.call_margin == pytest.approx(free.call_margin)
        assert result.selection_score == pytest.approx(free.selection_score)
    assert router.route(messages, tools=[EMAIL, WEATHER], tool_choice="required", logits_processor=processor).calls
    decoder = make_router(seed=6, tool_selection="decoder", min_selection_score=1e6)
    assert decoder.route(messages, tools=[EMAIL, WEATHER], max_new_tokens=8).selection_score is None


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
