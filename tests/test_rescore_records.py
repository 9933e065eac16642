"""`benchmarks/rescore_records.py`: kept eval records re-scored after a filter that acts on parsed calls."""

import importlib.util
import json
from pathlib import Path

import orjson
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "rescore_records.py"
EVENTS = {"name": "find_events", "description": "Music events in a city.",
          "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                         "properties": {"city": {"type": "string"}, "date": {"type": "string"}}}}
WEATHER = {"name": "get_weather", "description": "Weather of a city.",
           "parameters": {"type": "object", "required": ["city"], "additionalProperties": False,
                          "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module")
def rescore_records():
    spec = importlib.util.spec_from_file_location("rescore_records", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(tmp_path: Path, made_up_ast_ok: bool = False) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    examples = [
        {"id": "events", "source": "bfcl:live_multiple", "tools": [EVENTS],
         "messages": [{"role": "user", "content": "Find music events in Paris"}],
         "calls": [{"name": "find_events", "arguments": {"city": "Paris"},
                    "allowed": {"city": ["Paris"], "date": [""]}}]},
        {"id": "greeting", "source": "bfcl:live_irrelevance", "tools": [EVENTS],
         "messages": [{"role": "user", "content": "Hello there"}], "calls": []},
    ]
    (data / "validation.jsonl").write_bytes(b"\n".join(orjson.dumps(e) for e in examples) + b"\n")
    (data / "catalog_train.jsonl").write_bytes(orjson.dumps(WEATHER) + b"\n")
    made_up = [{"name": "find_events", "arguments": {"city": "Paris", "date": "2023-01-01"}}]
    records = [
        {"id": "events", "category": "live_multiple", "active_tools": ["get_weather", "find_events"],
         "calls": made_up, "gold": [{"find_events": {"city": ["Paris"], "date": [""]}}],
         "ast_ok": made_up_ast_ok, "valid": True},
        {"id": "greeting", "category": "live_irrelevance", "active_tools": ["find_events", "get_weather"],
         "calls": [], "gold": [], "ast_ok": True, "valid": True},
    ]
    path = tmp_path / "run.examples.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    return path


def test_a_made_up_optional_value_dropped_makes_the_call_right(tmp_path, rescore_records, monkeypatch, capsys):
    records = _write(tmp_path)
    out = tmp_path / "result.json"
    monkeypatch.setattr("sys.argv", ["rescore_records.py", str(records), "--data-dir", str(tmp_path / "data"),
                                     "--split", "validation", "--filter", "drop-unstated-optionals", "--out", str(out)])
    rescore_records.main()
    result = json.loads(out.read_text())
    assert result["calls_changed"] == 1 and result["n"] == 2
    assert result["before"]["AST"]["value"] == 0.5 and result["after"]["AST"]["value"] == 1.0
    assert (result["paired_ast"]["only_a"], result["paired_ast"]["only_b"]) == (0, 1)
    assert result["after"]["validity"]["value"] == 1.0  # dropping an optional key keeps the call valid
    assert "| AST (n=2) | 0.500 | 1.000 |" in capsys.readouterr().out


def test_records_whose_stored_outcome_does_not_reproduce_are_refused(tmp_path, rescore_records, monkeypatch):
    records = _write(tmp_path, made_up_ast_ok=True)  # the made-up date cannot have been scored right
    monkeypatch.setattr("sys.argv", ["rescore_records.py", str(records), "--data-dir", str(tmp_path / "data"),
                                     "--split", "validation", "--filter", "drop-unstated-optionals"])
    with pytest.raises(SystemExit, match="does not reproduce"):
        rescore_records.main()

