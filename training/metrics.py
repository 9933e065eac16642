"""Router scoring: BFCL AST matching and the design's router metrics, each with N and a 95 % interval.

`ast_match` re-implements the Python rules of BFCL's `ast_checker.py` without importing `bfcl_eval`.
Gold answers use BFCL's `ground_truth` form: `[{fn_name: {param: [allowed values]}}]`, `""` in an
allowed list meaning the parameter may be omitted and `[]` meaning no call is expected. Tool schemas are
the normalised JSON Schema of `toolformer_router.schema` (BFCL `dict`/`float`/`tuple` already mapped to
`object`/`number`/`array`; BFCL `any` has no `type` and is checked as BFCL does, as a string).

Deliberate departures from BFCL, all in the lenient direction for JSON output:
- an int is accepted for a `number` inside arrays too (BFCL converts only top-level values);
- string standardisation applies at every depth of lists and dicts (BFCL: strings one level deep);
- a tuple is accepted for any array (normalised schemas no longer tell BFCL `tuple` from `array`);
- parallel calls are paired by a maximum bipartite matching (BFCL pairs greedily in gold order);
- names are compared exactly (BFCL's per-model `.` -> `_` renaming does not apply to our decoder);
- a bool never equals a number inside lists and dicts (BFCL compares those with Python `==`).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}
_STANDARDIZE = re.compile(r"[ ,./\-_*^]")


# ---------------------------------------------------------------- BFCL AST matching


def standardize_string(text: str) -> str:
    """BFCL's string normalisation: drop spaces and `,./-_*^`, lowercase, single to double quotes."""
    return _STANDARDIZE.sub("", text).lower().replace("'", '"')


def _python_type(schema: Mapping[str, Any]) -> type:
    """The Python type BFCL expects for a schema; a missing (BFCL `any`) or union type counts as str."""
    declared = schema.get("type")
    return _PY_TYPES.get(declared, str) if isinstance(declared, str) else str


def _item_type(schema: Mapping[str, Any]) -> type | None:
    """The element type of an array schema, or None when the items are not typed."""
    items = schema.get("items")
    if isinstance(items, Mapping) and isinstance(items.get("type"), str):
        return _python_type(items)
    return None


def _answer_type(allowed: Sequence[Any]) -> type | None:
    """Type of the first allowed value that is not the optional marker `""`."""
    return next((type(a) for a in allowed if a != ""), None)


def _coerce(value: Any, expected: type) -> Any:
    """BFCL's conversions: a tuple is a list, an int is accepted where a float is expected."""
    if expected is list and isinstance(value, tuple):
        return list(value)
    if expected is float and type(value) is int:
        return float(value)
    return value


def _type_check(value: Any, allowed: Sequence[Any], expected: type, item_type: type | None) -> tuple[bool, bool]:
    """BFCL's `type_checker`: (type ok, value is a "variable").

    A gold value whose type differs from the schema's marks a variable (e.g. `None` for a string
    parameter): a value of the gold's type is then accepted, and compared with `in`, unstandardised.
    """
    answer_type = _answer_type(allowed)
    is_variable = answer_type is not None and answer_type is not expected
    if type(value) is expected:
        if item_type is None:
            return True, is_variable
        items_ok = any(
            not isinstance(candidate, list)
            or all(_type_check(_coerce(item, item_type), candidate, item_type, None)[0] for item in value)
            for candidate in allowed
        )
        return items_ok, is_variable and items_ok
    if answer_type is not None and type(value) is answer_type:
        return True, True
    return False, False


def _same(value: Any, gold: Any) -> bool:
    """Equality with BFCL string standardisation, recursive through lists and dicts; bool is not a number."""
    if isinstance(value, bool) or isinstance(gold, bool):
        return type(value) is type(gold) and value == gold
    if isinstance(value, str) and isinstance(gold, str):
        return standardize_string(value) == standardize_string(gold)
    if isinstance(value, (list, tuple)) and isinstance(gold, (list, tuple)):
        return len(value) == len(gold) and all(map(_same, value, gold))
    if isinstance(value, dict) and isinstance(gold, dict):
        return value.keys() == gold.keys() and all(_same(value[k], gold[k]) for k in value)
    if isinstance(value, (int, float)) and isinstance(gold, (int, float)):
        return value == gold
    return type(value) is type(gold) and value == gold


def _dict_matches(value: Any, gold: Any) -> bool:
    """BFCL's `dict_checker` for one gold dict given as `{key: [allowed values]}`."""
    if not isinstance(value, dict) or not isinstance(gold, dict):
        return False
    return all(k in gold and any(_same(v, a) for a in gold[k]) for k, v in value.items()) and all(
        k in value or "" in options for k, options in gold.items()
    )


def _list_candidates(allowed: Sequence[Any]) -> list[Any]:
    """Allowed values of a list parameter; as in BFCL, the optional marker `""` also admits `[]`."""
    return [[] if a == "" else a for a in allowed]


def value_error(param: str, value: Any, allowed: Sequence[Any], schema: Mapping[str, Any]) -> str | None:
    """Why `value` is not one of `allowed` for a parameter with this schema under BFCL's rules; None if it is."""
    expected = _python_type(schema)
    item_type = _item_type(schema) if expected is list else None
    value = _coerce(value, expected)
    type_ok, is_variable = _type_check(value, allowed, expected, item_type)
    if not type_ok:
        return f"wrong type for {param!r}: expected {expected.__name__}, got {type(value).__name__} ({value!r})"
    if is_variable:
        ok = value in allowed
    elif expected is dict:
        ok = any(_dict_matches(value, a) for a in allowed if a != "")
    elif expected is list and item_type is dict:
        ok = any(
            isinstance(c, list) and len(c) == len(value) and all(map(_dict_matches, value, c))
            for c in _list_candidates(allowed)
        )
    elif expected is list:
        ok = any(_same(value, c) for c in _list_candidates(allowed))
    else:
        ok = any(_same(value, a) for a in allowed)
    return None if ok else f"invalid value for {param!r}: {value!r}, expected one of {list(allowed)!r}"


def _call_error(
    predicted: Mapping[str, Any],
    gold_name: str,
    gold_params: Mapping[str, Sequence[Any]],
    tools: Mapping[str, Mapping[str, Any]],
) -> str | None:
    """BFCL's `simple_function_checker` for one predicted call against one gold call; None when it matches."""
    name = predicted.get("name")
    if name != gold_name:
        return f"expected function {gold_name!r}, got {name!r}"
    if gold_name not in tools:
        return f"function {gold_name!r} is not among the active tools"
    arguments = predicted.get("arguments") or {}
    schema = tools[gold_name].get("parameters", {})
    properties = schema.get("properties", {})
    for param in schema.get("required", []):
        if param not in arguments:
            return f"missing required parameter {param!r}"
    for param, value in arguments.items():
        if param not in properties or param not in gold_params:
            return f"unexpected parameter {param!r}"
        error = value_error(param, value, gold_params[param], properties[param])
        if error:
            return error
    for param, allowed in gold_params.items():
        if param not in arguments and "" not in allowed:
            return f"missing parameter {param!r} (not optional in the gold answer)"
    return None


def _matching_size(edges: Sequence[Sequence[bool]]) -> int:
    """Size of a maximum bipartite matching (rows to columns) by augmenting paths."""
    owner: dict[int, int] = {}

    def augment(row: int, seen: set[int]) -> bool:
        for col, ok in enumerate(edges[row]):
            if ok and col not in seen:
                seen.add(col)
                if col not in owner or augment(owner[col], seen):
                    owner[col] = row
                    return True
        return False

    return sum(augment(row, set()) for row in range(len(edges)))


def _gold_calls(gold: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Sequence[Any]]]]:
    """Gold calls as (name, {param: allowed}) pairs."""
    return [next(iter(call.items())) for call in gold]


def _tools_by_name(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {tool["name"]: tool for tool in tools}


def ast_match(predicted: list[dict], gold: list[dict], tools: list[dict]) -> tuple[bool, str]:
    """BFCL AST check of predicted calls `[{"name", "arguments"}]` against BFCL ground truth.

    `gold == []` is an irrelevance example: right exactly when no call is made. Otherwise the counts
    must be equal and the calls must pair one-to-one, in any order, each pair passing BFCL's function
    check. Returns (ok, reason); the reason is "" when ok.
    """
    if not gold:
        return (True, "") if not predicted else (False, f"expected no call, got {len(predicted)}")
    if len(predicted) != len(gold):
        return False, f"wrong number of calls: expected {len(gold)}, got {len(predicted)}"
    by_name = _tools_by_name(tools)
    calls = _gold_calls(gold)
    errors = [[_call_error(p, name, params, by_name) for p in predicted] for name, params in calls]
    if _matching_size([[e is None for e in row] for row in errors]) == len(gold):
        return True, ""
    if len(gold) == 1:
        return False, str(errors[0][0])
    for index, ((name, _), row) in enumerate(zip(calls, errors)):
        if all(row):
            same_name = [e for p, e in zip(predicted, row) if p.get("name") == name]
            return False, f"gold call {index} ({name!r}) matches no predicted call: {(same_name or row)[0]}"
    return False, "every gold call matches some predicted call, but not one-to-one"


# ---------------------------------------------------------------- router metrics


@dataclass
class ExampleResult:
    """One scored example: predicted calls, BFCL gold (`[]` = no call expected) and the active tools."""

    id: str
    category: str
    predicted: list[dict]
    gold: list[dict]
    tools: list[dict]
    valid: bool = True
    """The output parsed and validated against the active tools' schemas."""


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval for a proportion `successes / n` (n > 0)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float]) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of a mean (`BOOTSTRAP_RESAMPLES` resamples, seed `BOOTSTRAP_SEED`)."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = [data[rng.integers(0, len(data), len(data))].mean() for _ in range(BOOTSTRAP_RESAMPLES)]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value of paired outcomes: a binomial(discordant pairs, 1/2) test, where `only_a`
    pairs only the first system got right and `only_b` only the second."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"need non-negative counts, got {only_a}, {only_b}")
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_outcomes(pairs: Sequence[tuple[bool, bool]]) -> dict[str, Any]:
    """Two systems' right/wrong on the same examples: both, only A, only B, neither, each's accuracy, McNemar's p."""
    both = sum(a and b for a, b in pairs)
    only_a = sum(a and not b for a, b in pairs)
    only_b = sum(b and not a for a, b in pairs)
    n = len(pairs)
    return {"n": n, "both": both, "only_a": only_a, "only_b": only_b, "neither": n - both - only_a - only_b,
            "accuracy_a": (both + only_a) / n if n else None, "accuracy_b": (both + only_b) / n if n else None,
            "mcnemar_p": mcnemar_p(only_a, only_b)}


def _proportion(successes: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"value": None, "n": 0, "ci95": None}
    return {"value": successes / n, "n": n, "ci95": list(wilson_interval(successes, n))}


def _mean(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"value": None, "n": 0, "ci95": None}
    return {"value": float(np.mean(values)), "n": len(values), "ci95": list(bootstrap_interval(values))}


def _gold_keys(gold_params: Mapping[str, Sequence[Any]]) -> list[str]:
    """Gold (key, value) pairs: the keys with an allowed value other than the optional marker `""`."""
    return [k for k, allowed in gold_params.items() if any(a != "" for a in allowed)]


def _parameter_f1(
    arguments: Mapping[str, Any], gold_params: Mapping[str, Sequence[Any]], properties: Mapping[str, Any]
) -> float:
    """F1 over (key, value) pairs; a predicted pair is right when its key is gold and its value allowed."""
    right = {
        k for k, v in arguments.items()
        if k in gold_params and value_error(k, v, gold_params[k], properties.get(k, {})) is None
    }
    gold_keys = _gold_keys(gold_params)
    precision = len(right) / len(arguments) if arguments else 1.0
    recall = len(right.intersection(gold_keys)) / len(gold_keys) if gold_keys else 1.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _values_recalled(
    arguments: Mapping[str, Any], gold_params: Mapping[str, Sequence[Any]], properties: Mapping[str, Any]
) -> tuple[int, int]:
    """(gold values found among the predicted values, whatever their keys, one-to-one; gold values)."""
    gold_keys = _gold_keys(gold_params)
    edges = [
        [value_error(k, v, gold_params[k], properties.get(k, {})) is None for v in arguments.values()]
        for k in gold_keys
    ]
    return _matching_size(edges), len(gold_keys)


def _selected_pairs(
    predicted: Sequence[Mapping[str, Any]], gold: Sequence[Mapping[str, Any]], tools: Mapping[str, Mapping[str, Any]]
) -> list[tuple[Mapping[str, Any], Mapping[str, Sequence[Any]], Mapping[str, Any]]]:
    """Correctly selected calls: predicted calls paired with gold calls of the same name.

    Within a name, pairs are taken greedily by highest parameter F1. Returns
    (predicted arguments, gold params, parameter schemas) triples.
    """
    pairs = []
    golds_by_name: dict[str, list[Mapping[str, Sequence[Any]]]] = defaultdict(list)
    for name, params in _gold_calls(gold):
        golds_by_name[name].append(params)
    for name, gold_group in golds_by_name.items():
        properties = tools.get(name, {}).get("parameters", {}).get("properties", {})
        pred_group = [p.get("arguments") or {} for p in predicted if p.get("name") == name]
        candidates = sorted(
            (-_parameter_f1(a, g, properties), i, j)
            for i, a in enumerate(pred_group)
            for j, g in enumerate(gold_group)
        )
        used_pred: set[int] = set()
        used_gold: set[int] = set()
        for _, i, j in candidates:
            if i not in used_pred and j not in used_gold:
                used_pred.add(i)
                used_gold.add(j)
                pairs.append((pred_group[i], gold_group[j], properties))
    return pairs


def selects_gold_tools(predicted: list[dict], gold: list[dict]) -> bool:
    """Tool selection is right: the predicted calls name the gold calls' tools, as a multiset."""
    return Counter(p.get("name") for p in predicted) == Counter(name for name, _ in _gold_calls(gold))


def score(results: list[ExampleResult]) -> dict[str, dict[str, Any]]:
    """TSA, PF1, VR, EM, FPR, FNR, BFCL AST accuracy and validity rate, each `{"value", "n", "ci95"}`.

    Units: TSA, EM, FNR over examples with a gold call; FPR over examples whose gold is no call; AST
    and validity over all examples; PF1 is the mean per-call F1 over correctly selected calls (gold and
    predicted call of the same name, in any example), with a seeded percentile bootstrap interval; VR
    pools the gold values of those calls. Proportions carry Wilson intervals. n = 0 gives value None.
    """
    counts: Counter[str] = Counter()
    f1s: list[float] = []
    for result in results:
        tools = _tools_by_name(result.tools)
        ast_ok, _ = ast_match(result.predicted, result.gold, result.tools)
        counts["ast"] += ast_ok
        counts["valid"] += result.valid
        if not result.gold:
            counts["no_call"] += 1
            counts["false_positive"] += bool(result.predicted)
            continue
        counts["call"] += 1
        counts["false_negative"] += not result.predicted
        counts["exact"] += ast_ok
        counts["selected"] += selects_gold_tools(result.predicted, result.gold)
        for arguments, gold_params, properties in _selected_pairs(result.predicted, result.gold, tools):
            f1s.append(_parameter_f1(arguments, gold_params, properties))
            recalled, total = _values_recalled(arguments, gold_params, properties)
            counts["values_recalled"] += recalled
            counts["gold_values"] += total
    return {
        "TSA": _proportion(counts["selected"], counts["call"]),
        "PF1": _mean(f1s),
        "VR": _proportion(counts["values_recalled"], counts["gold_values"]),
        "EM": _proportion(counts["exact"], counts["call"]),
        "FPR": _proportion(counts["false_positive"], counts["no_call"]),
        "FNR": _proportion(counts["false_negative"], counts["call"]),
        "AST": _proportion(counts["ast"], len(results)),
        "validity": _proportion(counts["valid"], len(results)),
    }


def score_by(
    results: list[ExampleResult], key: Callable[[ExampleResult], str] = lambda r: r.category
) -> dict[str, dict[str, dict[str, Any]]]:
    """`score` per group (default: per category), groups in sorted order."""
    groups: dict[str, list[ExampleResult]] = defaultdict(list)
    for result in results:
        groups[key(result)].append(result)
    return {name: score(groups[name]) for name in sorted(groups)}
