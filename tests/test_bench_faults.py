"""`benchmarks/bench_faults.py`: some of its cases, through its own functions, on a tiny router (so the script
cannot rot unnoticed), and that a case which does not hold is reported as failing."""

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import EMAIL, WEATHER

from toolformer_router import GistCache

TOOLS = [WEATHER, EMAIL]


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_faults.py"
    spec = importlib.util.spec_from_file_location("bench_faults", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _explained(outcomes) -> list[dict]:
    return [{**o.row(), "detail": o.detail, "warnings": o.warnings[:2]} for o in outcomes]


def test_cache_faults_route_with_a_warning(bench, make_router, tmp_path):
    cases = ["no fault, filled cache", "file of garbage", "write lock held (BEGIN IMMEDIATE, WAL)",
             "row with NaN values, valid checksum"]  # in the script's order
    outcomes = bench.run_all(lambda path: make_router(gist_cache=GistCache(path)), None, TOOLS, tmp_path, set(cases))
    assert [o.case for o in outcomes] == cases and all(o.kind == "cache" for o in outcomes)
    assert all(o.passed and o.still_routes for o in outcomes), _explained(outcomes)
    assert [o.outcome for o in outcomes[1:]] == ["routed+warning"] * 3
    assert "damaged" in outcomes[1].warnings[0] and "locked" in outcomes[2].warnings[0]
    assert "non-finite" in outcomes[3].warnings[0]


def test_bad_inputs_raise_typed_errors_and_the_router_still_routes(bench, make_router, tmp_path):
    cases = ["$ref a -> b -> a (required)", "tool_calls: a number", "max_new_tokens=10**9", "query of 2 MB",
             "duplicate tool names in one request"]  # in the script's order
    assert set(cases) <= set(bench.BAD_INPUTS)
    outcomes = bench.run_all(lambda path: make_router(gist_cache=GistCache(path)), None, TOOLS, tmp_path, set(cases))
    assert [o.case for o in outcomes] == cases
    assert all(o.passed for o in outcomes), _explained(outcomes)
    assert [o.outcome.split()[-1] for o in outcomes] == ["InvalidToolError", "InvalidQueryError", "InvalidQueryError",
                                                         "QueryTooLongError", "DuplicateToolError"]


def test_a_case_that_does_not_hold_fails(bench, make_router, tmp_path):
    router = make_router()
    expected = bench.route(router, TOOLS)
    accepted = bench.run_input_case("a good request", bench.BadInput(lambda r, t: r.route(bench.QUERY, t)), router,
                                    TOOLS, expected)
    assert (accepted.outcome, accepted.passed, accepted.still_routes) == ("accepted", False, True)
    untyped = bench.run_input_case("raises ValueError", bench.BadInput(lambda r, t: int("x")), router, TOOLS, expected)
    assert (untyped.outcome, untyped.passed) == ("untyped error ValueError", False)
    silent = bench.run_cache_case("no warning", bench.CacheFault(lambda path: None), lambda path: make_router(
        gist_cache=GistCache(path)), TOOLS, expected, tmp_path / "silent")
    assert (silent.outcome, silent.passed) == ("routed, no warning", False)
