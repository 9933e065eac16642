"""Scoring: BFCL AST rules, router metrics and their intervals, on hand-computed cases."""

from __future__ import annotations

import pytest

from toolformer_router.training.metrics import (
    ExampleResult,
    ast_match,
    bootstrap_interval,
    mcnemar_p,
    paired_outcomes,
    score,
    score_by,
    standardize_string,
    wilson_interval,
)


def tool(name: str, properties: dict, required: list[str]) -> dict:
    return {"name": name, "description": "", "parameters": {
        "type": "object", "properties": properties, "required": required, "additionalProperties": False}}


FACTORIAL = tool("math.factorial", {"number": {"type": "integer"}}, ["number"])
WEATHER = tool("get_weather", {"city": {"type": "string"}, "unit": {"type": "string"}}, ["city"])
AREA = tool("area", {"base": {"type": "number"}, "height": {"type": "number"}}, ["base", "height"])
SETTINGS = tool("set_options", {
    "verbose": {"type": "boolean"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "limits": {"type": "array", "items": {"type": "number"}},
    "counts": {"type": "array", "items": {"type": "integer"}},
    "config": {"type": "object"},
    "rows": {"type": "array", "items": {"type": "object"}},
    "note": {"type": "string"},
}, [])
TOOLS = [FACTORIAL, WEATHER, AREA, SETTINGS]


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def check(predicted: list[dict], gold: list[dict]) -> bool:
    return ast_match(predicted, gold, TOOLS)[0]


WEATHER_GOLD = [{"get_weather": {"city": ["Paris", "Paris, France"], "unit": ["", "celsius"]}}]


# ---------------------------------------------------------------- ast_match: one call


def test_optional_parameter_may_be_omitted_or_given_an_allowed_value():
    assert check([call("get_weather", city="Paris")], WEATHER_GOLD)
    assert check([call("get_weather", city="Paris", unit="celsius")], WEATHER_GOLD)
    assert not check([call("get_weather", city="Paris", unit="kelvin")], WEATHER_GOLD)


def test_parameter_without_empty_marker_must_be_given_even_if_schema_optional():
    gold = [{"get_weather": {"city": ["Paris"], "unit": ["celsius"]}}]
    ok, reason = ast_match([call("get_weather", city="Paris")], gold, TOOLS)
    assert not ok and "'unit'" in reason


def test_missing_required_parameter_is_rejected():
    gold = [{"area": {"base": [3.0], "height": ["", 4.0]}}]
    ok, reason = ast_match([call("area", base=3.0)], gold, TOOLS)
    assert not ok and "missing required parameter 'height'" in reason


def test_unknown_parameter_is_rejected():
    ok, reason = ast_match([call("get_weather", city="Paris", days=3)], WEATHER_GOLD, TOOLS)
    assert not ok and "unexpected parameter 'days'" in reason


def test_parameter_in_schema_but_not_in_gold_is_rejected():
    gold = [{"get_weather": {"city": ["Paris"]}}]
    assert not check([call("get_weather", city="Paris", unit="celsius")], gold)


def test_wrong_function_name_is_rejected_and_dotted_names_match_exactly():
    gold = [{"math.factorial": {"number": [5]}}]
    assert check([call("math.factorial", number=5)], gold)
    assert not check([call("math_factorial", number=5)], gold)


def test_int_is_accepted_for_a_number_but_float_is_not_an_integer():
    assert check([call("area", base=3, height=4)], [{"area": {"base": [3.0], "height": [4.0]}}])
    assert not check([call("math.factorial", number=5.0)], [{"math.factorial": {"number": [5]}}])


def test_bool_is_not_an_integer_and_integer_is_not_a_bool():
    assert not check([call("math.factorial", number=True)], [{"math.factorial": {"number": [1]}}])
    gold = [{"set_options": {"verbose": [True]}}]
    assert check([call("set_options", verbose=True)], gold)
    assert not check([call("set_options", verbose=1)], gold)


def test_string_standardisation_ignores_case_spaces_and_listed_punctuation_only():
    assert standardize_string("April 1, 2024") == "april12024"
    assert standardize_string("It's a_b-c/d.e*f^g") == 'it"sabcdefg'
    assert check([call("get_weather", city="PARIS,  france")], WEATHER_GOLD)
    assert check([call("get_weather", city="paris-france.")], WEATHER_GOLD)
    assert not check([call("get_weather", city="Paris!")], WEATHER_GOLD)


def test_lists_are_ordered_with_standardised_strings_and_int_for_number_items():
    gold = [{"set_options": {"tags": [["New York", "Boston"]], "limits": ["", [1.0, 2.5]]}}]
    assert check([call("set_options", tags=["new york", "BOSTON"], limits=[1, 2.5])], gold)
    assert check([call("set_options", tags=("New York", "Boston"))], gold)
    assert not check([call("set_options", tags=["Boston", "New York"])], gold)
    assert not check([call("set_options", tags=["New York"])], gold)
    assert not check([call("set_options", tags=["New York", "Boston"], limits=[True, 2.5])], gold)
    assert check([call("set_options", tags=["New York", "Boston"], limits=[])], gold)  # BFCL: "" admits []
    assert check([call("set_options", limits=[1, 2.5])], [{"set_options": {"limits": [[1.0, 2.5]]}}])
    assert check([call("set_options", counts=[1, 2])], [{"set_options": {"counts": [[1, 2]]}}])
    assert not check([call("set_options", counts=[1.0, 2])], [{"set_options": {"counts": [[1, 2]]}}])


def test_dict_values_are_checked_key_by_key_and_nested_dicts_recursively():
    gold = [{"set_options": {"config": [{
        "mode": ["fast", "quick"],
        "depth": ["", 2],
        "origin": [{"lat": 10.5, "lon": 1, "label": "Home Base"}],
    }]}}]
    good = {"mode": "QUICK", "origin": {"lat": 10.5, "lon": 1.0, "label": "home base"}}
    assert check([call("set_options", config=good)], gold)
    assert check([call("set_options", config={**good, "depth": 2})], gold)
    assert not check([call("set_options", config={**good, "depth": 3})], gold)
    assert not check([call("set_options", config={**good, "extra": 1})], gold)
    assert not check([call("set_options", config={"origin": good["origin"]})], gold)  # mode not optional
    for lon in (2, True):
        origin = {"lat": 10.5, "lon": lon, "label": "Home Base"}
        assert not check([call("set_options", config={**good, "origin": origin})], gold)


def test_list_of_dicts_is_checked_element_by_element_in_order():
    gold = [{"set_options": {"rows": [[{"item": ["burgers"], "qty": [5]}, {"item": ["wings"], "qty": [6]}]]}}]
    assert check([call("set_options", rows=[{"item": "Burgers", "qty": 5}, {"item": "wings", "qty": 6}])], gold)
    assert not check([call("set_options", rows=[{"item": "wings", "qty": 6}, {"item": "burgers", "qty": 5}])], gold)
    assert not check([call("set_options", rows=[{"item": "burgers", "qty": 5}])], gold)


def test_gold_value_of_another_type_is_a_variable_compared_as_is():
    gold = [{"set_options": {"note": ["", None]}}]
    assert check([call("set_options", note=None)], gold)
    assert check([call("set_options")], gold)
    assert not check([call("set_options", note="None")], gold)


def test_tool_missing_from_active_tools_never_matches():
    ok, reason = ast_match([call("get_weather", city="Paris")], WEATHER_GOLD, [FACTORIAL])
    assert not ok and "not among the active tools" in reason


# ---------------------------------------------------------------- ast_match: several calls, no call


FACT_5_7 = [{"math.factorial": {"number": [5]}}, {"math.factorial": {"number": [7]}}]


def test_parallel_calls_match_in_any_order():
    assert check([call("math.factorial", number=5), call("math.factorial", number=7)], FACT_5_7)
    assert check([call("math.factorial", number=7), call("math.factorial", number=5)], FACT_5_7)
    mixed = [{"get_weather": {"city": ["Paris"]}}, {"math.factorial": {"number": [5]}}]
    assert check([call("math.factorial", number=5), call("get_weather", city="Paris")], mixed)


def test_parallel_calls_are_a_multiset_a_duplicate_does_not_count_twice():
    ok, reason = ast_match([call("math.factorial", number=5), call("math.factorial", number=5)], FACT_5_7, TOOLS)
    assert not ok and "gold call 1" in reason
    assert not check([call("math.factorial", number=5)] * 3, FACT_5_7)
    assert not check([call("math.factorial", number=5)], FACT_5_7)


def test_parallel_pairing_is_a_full_matching_not_greedy():
    gold = [{"math.factorial": {"number": [5, 7]}}, {"math.factorial": {"number": [5]}}]
    assert check([call("math.factorial", number=5), call("math.factorial", number=7)], gold)


def test_irrelevance_is_right_exactly_when_no_call_is_made():
    assert ast_match([], [], TOOLS) == (True, "")
    ok, reason = ast_match([call("math.factorial", number=5)], [], TOOLS)
    assert not ok and "expected no call" in reason
    assert not check([], [{"math.factorial": {"number": [5]}}])


# ---------------------------------------------------------------- intervals


@pytest.mark.parametrize(("successes", "n", "expected"), [
    (8, 10, (0.4902, 0.9433)),
    (5, 10, (0.2366, 0.7634)),
    (0, 10, (0.0, 0.2775)),
    (10, 10, (0.7225, 1.0)),
])
def test_wilson_interval_known_values(successes, n, expected):
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=5e-5)


def test_wilson_interval_rejects_empty_or_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_bootstrap_interval_is_seeded_and_close_to_the_normal_approximation():
    values = [i / 36 for i in range(37)]  # mean 0.5, population sd 0.2966
    low, high = bootstrap_interval(values)
    assert bootstrap_interval(values) == (low, high)
    half = 1.96 * 0.2966 / 37**0.5
    assert low == pytest.approx(0.5 - half, abs=0.01) and high == pytest.approx(0.5 + half, abs=0.01)


# ---------------------------------------------------------------- score


def example(
    id: str, predicted: list[dict], gold: list[dict], category: str = "simple", valid: bool = True
) -> ExampleResult:
    return ExampleResult(id=id, category=category, predicted=predicted, gold=gold, tools=TOOLS, valid=valid)


HAND_MADE = [
    # exact, both gold pairs right: F1 1, values 2/2
    example("e1", [call("get_weather", city="paris", unit="celsius")], WEATHER_GOLD),
    # exact by BFCL, but the optional gold pair (unit, celsius) is missed: P 1, R 1/2, F1 2/3, values 1/2
    example("e2", [call("get_weather", city="Paris")], WEATHER_GOLD),
    # right tool, values swapped between keys: F1 0, values 2/2 (VR ignores keys), not exact
    example("e3", [call("area", base=4, height=3)], [{"area": {"base": [3.0], "height": [4.0]}}], "multiple"),
    # parallel in swapped order: two pairs with F1 1, values 1/1 each
    example("e4", [call("math.factorial", number=7), call("math.factorial", number=5)], FACT_5_7, "parallel"),
    # wrong tool: no selected pair
    example("e5", [call("get_weather", city="Paris")], [{"math.factorial": {"number": [5]}}]),
    # no call where one was due; output did not validate
    example("e6", [], [{"math.factorial": {"number": [5]}}], valid=False),
    # irrelevance, right and wrong
    example("e7", [], [], "irrelevance"),
    example("e8", [call("math.factorial", number=3)], [], "irrelevance"),
]


def test_score_on_hand_made_examples():
    metrics = score(HAND_MADE)
    expected = {
        "TSA": (4, 6), "VR": (7, 8), "EM": (3, 6), "FPR": (1, 2), "FNR": (1, 6), "AST": (4, 8), "validity": (7, 8),
    }
    for name, (successes, n) in expected.items():
        assert metrics[name]["value"] == pytest.approx(successes / n), name
        assert metrics[name]["n"] == n, name
        assert metrics[name]["ci95"] == pytest.approx(list(wilson_interval(successes, n))), name
    assert metrics["PF1"]["n"] == 5
    assert metrics["PF1"]["value"] == pytest.approx((1 + 2 / 3 + 0 + 1 + 1) / 5)
    low, high = metrics["PF1"]["ci95"]
    assert 0.0 <= low < metrics["PF1"]["value"] < high <= 1.0
    assert score(HAND_MADE)["PF1"]["ci95"] == [low, high]  # seeded bootstrap: reproducible


def test_score_reports_none_when_a_metric_has_no_examples():
    metrics = score([example("e7", [], [], "irrelevance")])
    for name in ("TSA", "PF1", "VR", "EM", "FNR"):
        assert metrics[name] == {"value": None, "n": 0, "ci95": None}, name
    assert metrics["FPR"]["value"] == 0.0 and metrics["AST"]["value"] == 1.0
    assert score([])["AST"]["value"] is None


def test_pf1_interval_is_degenerate_when_every_call_scores_the_same():
    metrics = score(HAND_MADE[:1] + HAND_MADE[3:4])
    assert metrics["PF1"] == {"value": 1.0, "n": 3, "ci95": [1.0, 1.0]}


def test_score_by_category():
    tables = score_by(HAND_MADE)
    assert list(tables) == ["irrelevance", "multiple", "parallel", "simple"]
    assert tables["irrelevance"]["FPR"]["value"] == 0.5 and tables["irrelevance"]["TSA"]["n"] == 0
    assert tables["simple"]["TSA"]["value"] == pytest.approx(2 / 4)
    assert tables["parallel"]["EM"]["value"] == 1.0
    by_validity = score_by(HAND_MADE, key=lambda r: "valid" if r.valid else "invalid")
    assert by_validity["invalid"]["FNR"]["value"] == 1.0


def test_mcnemar_p_is_the_exact_two_sided_binomial_tail():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    assert mcnemar_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_p(8, 2) == mcnemar_p(2, 8)
    assert mcnemar_p(5, 5) == 1.0  # capped
    with pytest.raises(ValueError):
        mcnemar_p(-1, 3)


def test_paired_outcomes_count_each_kind_of_pair():
    pairs = [(True, True)] * 3 + [(True, False)] + [(False, True)] * 4 + [(False, False)] * 2
    row = paired_outcomes(pairs)
    assert (row["n"], row["both"], row["only_a"], row["only_b"], row["neither"]) == (10, 3, 1, 4, 2)
    assert (row["accuracy_a"], row["accuracy_b"]) == (0.4, 0.7)
    assert row["mcnemar_p"] == pytest.approx(mcnemar_p(1, 4))
