"""The curriculum on a tiny backbone: each stage's loss falls on a fixed batch; resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import EMAIL, STOCK, TINY_ROUTER_CONFIG, WEATHER, tiny_backbone
from toolformer_router import RouterConfig, ToolRouter
from toolformer_router.training.config import StageConfig, TrainConfig
from toolformer_router.training.curriculum import Curriculum, list_step_positions
from toolformer_router.training.data import Example, GoldCall


def _examples() -> list[Example]:
    def example(i, tools, text, calls):
        return Example(id=f"t{i}", source="test", tools=[t.get("function", t) for t in tools],
                       messages=[{"role": "user", "content": text}], calls=[GoldCall(**c) for c in calls])

    return [
        example(0, [WEATHER, EMAIL, STOCK], "weather in Paris", [{"name": "get_weather", "arguments": {"city": "Paris"}}]),
        example(1, [EMAIL, STOCK], "mail bob: hi", [{"name": "send_email", "arguments": {"to": "bob", "body": "hi"}}]),
        example(2, [WEATHER, STOCK], "tell me a joke", []),
        example(3, [STOCK, WEATHER], "AAPL price", [{"name": "stock.price", "arguments": {"ticker": "AAPL"}}]),
    ]


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, tokenizer):
    """A tiny random backbone saved as a folder, so checkpoints can name it and load it back."""
    folder = tmp_path_factory.mktemp("tiny-backbone")
    tiny_backbone("llama", len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _router(backbone_dir: str) -> ToolRouter:
    return ToolRouter.from_backbone(backbone_dir, config=RouterConfig(**TINY_ROUTER_CONFIG))


def _losses(log_path, stage: str, key: str) -> list[float]:
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [r[key] for r in records if r.get("stage") == stage and key in r]


@pytest.mark.parametrize(
    "stage, trainable, ratio",
    [
        (StageConfig(name="autoencode", steps=12, lr=3e-3, batch_size=2, warmup_steps=0), "full", 0.9),
        (StageConfig(name="contrastive", steps=12, lr=3e-3, batch_size=3, negatives=2, warmup_steps=0),
         "new_modules", 0.9),
        (StageConfig(name="calling", steps=12, lr=3e-3, batch_size=4, warmup_steps=0), "full", 0.9),
        # a frozen random backbone can only be steered through the gated cross-attention: a smaller drop
        (StageConfig(name="calling", steps=12, lr=1e-2, batch_size=4, warmup_steps=0, ae_weight=0.1,
                     ae_fraction=0.5, contrastive_weight=0.1), "new_modules", 0.985),
        (StageConfig(name="calling", steps=12, lr=1e-2, batch_size=4, warmup_steps=0), "lora", 0.985),
    ],
    ids=["autoencode-full", "contrastive-frozen", "calling-full", "calling-frozen", "calling-lora"],
)
def test_each_stage_lowers_its_loss_on_a_fixed_batch(tmp_path, backbone_dir, stage, trainable, ratio):
    router = _router(backbone_dir)
    examples = _examples() if stage.name != "contrastive" else [e for e in _examples() if e.calls]
    config = TrainConfig(output_dir=str(tmp_path), trainable=trainable, log_every=1, checkpoint_every=100,
                         stages=[stage])
    Curriculum(config, router, examples).run()
    key = {"autoencode": "ae", "contrastive": "contrastive", "calling": "calling"}[stage.name]
    losses = _losses(tmp_path / "log.jsonl", stage.name, key)
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < ratio * losses[0], losses
    checkpoint = tmp_path / "checkpoint"
    assert (checkpoint / "router.safetensors").is_file()
    if stage.name == "calling":  # the gates open as the decoder learns to use the gists
        assert any(abs(g) > 0 for g in _losses(tmp_path / "log.jsonl", stage.name, "gates")[-1])
    if trainable != "full":  # the checkpoint holds only what training changed, and loads back
        loaded = ToolRouter.from_pretrained(checkpoint, disk_cache=False)
        assert loaded.model.config.lora == router.model.config.lora
        query = examples[0].messages
        assert loaded.route(query, tools=examples[0].tools, max_new_tokens=6).raw == router.route(
            query, tools=examples[0].tools, max_new_tokens=6).raw


@pytest.mark.parametrize("candidates", ["example", "batch"])
def test_selection_stage_trains_the_selector_alone(tmp_path, backbone_dir, candidates):
    """The selector's loss falls on a fixed batch; the gists and the decoder's modules stay as they were."""
    router = _router(backbone_dir)
    before = {n: t.clone() for n, t in router.model.new_state_dict().items()}
    stage = StageConfig(name="selection", steps=12, lr=1e-2, batch_size=3, warmup_steps=0,
                        selection_candidates=candidates)
    config = TrainConfig(output_dir=str(tmp_path), log_every=1, checkpoint_every=100, stages=[stage])
    Curriculum(config, router, [e for e in _examples() if e.calls]).run()
    losses = _losses(tmp_path / "log.jsonl", "selection", "selection")
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
    after = router.model.new_state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("selector.") for n in changed), changed
    ranked = router.rank_tools("weather in Paris", tools=_examples()[0].tools)
    assert ranked[0][0] == "get_weather" and ranked[0][1] > ranked[1][1]


@pytest.mark.parametrize("legacy_state", [False, True], ids=["state", "state-without-optimizer-names"])
def test_resume_after_a_stop_reproduces_the_uninterrupted_run(tmp_path, backbone_dir, legacy_state):
    stages = [StageConfig(name="autoencode", steps=4, lr=1e-3, batch_size=2, warmup_steps=1),
              StageConfig(name="calling", steps=5, lr=1e-3, batch_size=2, grad_accum=2, warmup_steps=1,
                          contrastive_weight=0.1, negatives=2)]

    def config(folder):
        return TrainConfig(output_dir=str(folder), log_every=1, checkpoint_every=2, stages=stages)

    straight = tmp_path / "straight"
    Curriculum(config(straight), _router(backbone_dir), _examples()).run()

    stopped = tmp_path / "stopped"
    Curriculum(config(stopped), _router(backbone_dir), _examples()).run(stop_after_steps=6)  # inside stage 2
    progress = json.loads((stopped / "state" / "progress.json").read_text())["progress"]
    assert (progress["stage_index"], progress["step"], progress["global_step"]) == (1, 2, 6)
    if legacy_state:  # states written before optimizer moments were matched by parameter name
        meta = json.loads((stopped / "state" / "progress.json").read_text())
        del meta["optimizer_names"]
        (stopped / "state" / "progress.json").write_text(json.dumps(meta))
    with (stopped / "log.jsonl").open("ab") as log:  # a step logged after the checkpoint, then the process died
        log.write(json.dumps({"stage": "calling", "step": 3, "global_step": 7, "loss": 9.9}).encode() + b"\n")
    Curriculum(config(stopped), _router(backbone_dir), _examples()).run(resume=True)  # a fresh process's view
    logged = lambda folder: [(r["stage"], r["global_step"], r["step"]) for r in map(  # noqa: E731
        json.loads, (folder / "log.jsonl").read_text().splitlines()) if "global_step" in r]
    assert logged(stopped) == logged(straight)  # one history: the lost step's record replaced by its rerun

    final = json.loads((stopped / "state" / "progress.json").read_text())["progress"]
    assert final["global_step"] == 9
    expected = load_file(straight / "checkpoint" / "router.safetensors")
    resumed = load_file(stopped / "checkpoint" / "router.safetensors")
    assert expected.keys() == resumed.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=1e-3, atol=1e-4)


def test_resume_without_state_is_a_clear_error(tmp_path, backbone_dir):
    config = TrainConfig(output_dir=str(tmp_path), stages=[StageConfig(name="autoencode", steps=1)])
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Curriculum(config, _router(backbone_dir), _examples()).run(resume=True)


def test_list_step_positions_mark_the_token_after_each_call():
    """The token holding the `,` or `]` after a call object: merged with the call's brace or on its own;
    commas and brackets inside arguments (strings, nested lists and objects) are not list steps."""
    merged = ['[', '{"', 'name', '":', ' "', 'a', '",', ' "', 'arguments', '":', ' {"', 'x', '":', ' [', '1', ',',
              ' 2', ']', '}', '},', ' {"', 'name', '":', ' "', 'b', '",', ' "', 'arguments', '":', ' {}', '}]']
    assert list_step_positions(merged) == [19, 30]
    apart = ['[', '{"', 'name', '":', ' "', 'a', '",', ' "', 'arguments', '":', ' {"', 'q', '":', ' "', '}, ]"',
             '}}', ']', '<eos>']
    assert list_step_positions(apart) == [16]
    assert list_step_positions([]) == []


def test_list_step_weight_trains_where_a_call_list_goes_on(tmp_path, backbone_dir):
    two_calls = Example(id="p", source="test", tools=[WEATHER["function"], EMAIL],
                        messages=[{"role": "user", "content": "weather in Paris and Rome"}],
                        calls=[GoldCall(name="get_weather", arguments={"city": "Paris"}),
                               GoldCall(name="get_weather", arguments={"city": "Rome"})])
    stage = StageConfig(name="calling", steps=12, lr=1e-2, batch_size=2, warmup_steps=0, list_step_weight=1.0)
    config = TrainConfig(output_dir=str(tmp_path), trainable="full", log_every=1, checkpoint_every=100,
                         stages=[stage])
    curriculum = Curriculum(config, _router(backbone_dir), [two_calls, _examples()[2]])
    assert [len(e.list_steps) for e in curriculum.examples] == [2, 0]
    curriculum.run()
    losses = _losses(tmp_path / "log.jsonl", "calling", "list_step")
    assert len(losses) == 12 and losses[-1] < 0.5 * losses[0], losses


def test_composed_examples_join_the_calling_stage_and_train_only_keeps_the_rest(tmp_path, backbone_dir):
    """`composed_examples` adds two-call examples (both requests in one message) to the calling stage's items;
    `train_only: [cross_attention]` changes the cross-attention and leaves the gists and the selector as they were."""
    from toolformer_router.training.curriculum import train_from_config

    base = _router(backbone_dir).save_pretrained(tmp_path / "base")
    stage = StageConfig(name="calling", steps=4, lr=1e-2, batch_size=4, warmup_steps=0, list_step_weight=1.0,
                        composed_examples=2, train_only=["cross_attention"])
    config = TrainConfig(backbone=backbone_dir, output_dir=str(tmp_path / "run"), log_every=1,
                         checkpoint_every=100, router=TINY_ROUTER_CONFIG, stages=[stage])
    rome = Example(id="t4", source="test", tools=[WEATHER["function"], EMAIL], calls=[GoldCall(
        name="get_weather", arguments={"city": "Rome"})], messages=[{"role": "user", "content": "Rome weather?"}])
    examples = [*_examples(), rome]  # one pair of the same tool, one of two tools
    curriculum = Curriculum(config, _router(backbone_dir), examples)
    items = curriculum._stage_items(stage)
    composed = items[len(curriculum.examples):]
    assert len(items) == len(curriculum.examples) + 2 and [len(e.list_steps) for e in composed] == [2, 2]
    assert all(" Also, " in e.query_text for e in composed)
    assert sorted(len({e.tools[i].name for i in e.gold_tool_indexes}) for e in composed) == [1, 2]
    folder = train_from_config(config, load_examples=lambda _: examples, init_from=base)
    before, after = load_file(base / "router.safetensors"), load_file(folder / "router.safetensors")
    changed = {n for n in after if not torch.equal(before[n].to(after[n].dtype), after[n])}
    assert changed and all(n.startswith("cross_attention.") for n in changed), changed


def test_masked_examples_join_the_calling_stage_with_no_name_of_their_source(backbone_dir, tmp_path):
    """`masked_examples` adds copies of training examples whose tool and parameter names are random identifiers."""
    stage = StageConfig(name="calling", steps=1, batch_size=2, warmup_steps=0, masked_examples=2)
    config = TrainConfig(backbone=backbone_dir, output_dir=str(tmp_path / "run"), router=TINY_ROUTER_CONFIG,
                         stages=[stage])
    curriculum = Curriculum(config, _router(backbone_dir), _examples())
    items = curriculum._stage_items(stage)
    masked = items[len(curriculum.examples):]
    assert len(masked) == 2
    known = {tool.name for example in curriculum.examples for tool in example.tools}
    for example in masked:
        names = {tool.name for tool in example.tools}
        assert names and not names & known and all(name.startswith("f_") for name in names)


@pytest.mark.parametrize("split", [False, True])
def test_split_list_steps_puts_each_list_decision_on_its_own_token(tmp_path, backbone_dir, split):
    two_calls = Example(id="p", source="test", tools=[WEATHER["function"], EMAIL],
                        messages=[{"role": "user", "content": "weather in Paris and Rome"}],
                        calls=[GoldCall(name="get_weather", arguments={"city": "Paris"}),
                               GoldCall(name="get_weather", arguments={"city": "Rome"})])
    config = TrainConfig(output_dir=str(tmp_path), split_list_steps=split,
                         stages=[StageConfig(name="calling", steps=1)])
    curriculum = Curriculum(config, _router(backbone_dir), [two_calls, _examples()[0]])
    for example, prepared in zip([two_calls, _examples()[0]], curriculum.examples):
        texts = [curriculum.router.token_texts[i] for i in prepared.target_ids[:-1]]  # without EOS
        assert "".join(texts) == example.target_text()  # the same answer text either way
        steps = [texts[i] for i in prepared.list_steps]
        assert len(steps) == len(example.calls)
        if split:
            assert steps == [","] * (len(steps) - 1) + ["]"]
    tokenizer = curriculum.router.tokenizer
    merged = tokenizer(two_calls.target_text(), add_special_tokens=False)["input_ids"]
    assert (curriculum.examples[0].target_ids[:-1] == merged) == (not split)


def test_a_stage_can_be_chosen_by_position(tmp_path, backbone_dir):
    """Two stages of one name: `stages=["2"]` runs the second alone, with its own position's batches."""
    stages = [StageConfig(name="calling", steps=2, lr=1e-3, batch_size=2, warmup_steps=0),
              StageConfig(name="calling", steps=3, lr=1e-3, batch_size=2, warmup_steps=0)]
    config = TrainConfig(output_dir=str(tmp_path), log_every=1, checkpoint_every=100, stages=stages)
    Curriculum(config, _router(backbone_dir), _examples()).run(stages=["2"])
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {r["stage_index"] for r in records if "step" in r} == {1}
    assert [r["step"] for r in records if "step" in r] == [1, 2, 3]


def test_a_recipe_built_on_another_trains_that_one_first(tmp_path, backbone_dir):
    """`init_from: base.yaml`: one call trains the base recipe (its checkpoint is missing), then this recipe's
    stages from the base's weights; the second call finds the base's checkpoint and does not train it again."""
    import yaml

    from toolformer_router.training.curriculum import train_from_config

    common = {"backbone": backbone_dir, "router": TINY_ROUTER_CONFIG, "log_every": 1, "checkpoint_every": 100}
    stage = {"name": "calling", "steps": 2, "lr": 1e-3, "batch_size": 2, "warmup_steps": 0}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**common, "output_dir": "runs/base", "stages": [stage]}))
    (tmp_path / "top.yaml").write_text(yaml.safe_dump({**common, "output_dir": "runs/top", "init_from": "base.yaml",
                                                       "stages": [{**stage, "train_only": ["cross_attention"]}]}))
    top = TrainConfig.from_yaml(tmp_path / "top.yaml")
    assert top.init_from == str(tmp_path / "base.yaml")
    folder = train_from_config(top, load_examples=lambda _: _examples())
    base = load_file(tmp_path / "runs" / "base" / "checkpoint" / "router.safetensors")
    after = load_file(folder / "router.safetensors")
    assert all(torch.equal(base[n], after[n]) for n in after if not n.startswith("cross_attention."))
    assert any(not torch.equal(base[n], after[n]) for n in after if n.startswith("cross_attention."))
    stamp = (tmp_path / "runs" / "base" / "log.jsonl").stat().st_mtime_ns
    train_from_config(top, load_examples=lambda _: _examples())
    assert (tmp_path / "runs" / "base" / "log.jsonl").stat().st_mtime_ns == stamp


def test_max_minutes_ends_a_stage_early_and_the_run_goes_on(tmp_path, backbone_dir):
    stages = [StageConfig(name="calling", steps=50, lr=1e-3, batch_size=2, warmup_steps=0, max_minutes=1e-6),
              StageConfig(name="selection", steps=2, lr=1e-3, batch_size=2, warmup_steps=0)]
    config = TrainConfig(output_dir=str(tmp_path), log_every=1, checkpoint_every=100, stages=stages)
    Curriculum(config, _router(backbone_dir), _examples()).run()
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    ends = {r["stage"]: r for r in records if r.get("event") == "stage_end"}
    assert ends["calling"]["steps_this_run"] == 1 and ends["calling"]["cut_by_max_minutes"]
    assert ends["selection"]["steps_this_run"] == 2 and not ends["selection"]["cut_by_max_minutes"]
    assert (tmp_path / "checkpoint" / "router.safetensors").is_file()


def test_end_at_step_replays_a_cut_stage_on_its_full_schedule(tmp_path, backbone_dir):
    """`end_at_step` stops where `max_minutes` cut a stage, with the learning rates of the full schedule."""
    def run(folder, **cut):
        stage = StageConfig(name="calling", steps=6, lr=1e-3, batch_size=2, warmup_steps=1, **cut)
        config = TrainConfig(output_dir=str(folder), log_every=1, checkpoint_every=100, stages=[stage])
        Curriculum(config, _router(backbone_dir), _examples()).run()
        return _losses(folder / "log.jsonl", "calling", "lr"), load_file(folder / "checkpoint" / "router.safetensors")

    full_rates, _ = run(tmp_path / "full")
    cut_rates, cut_weights = run(tmp_path / "cut", end_at_step=3)
    assert len(full_rates) == 6 and cut_rates == full_rates[:3]
    _, again = run(tmp_path / "again", end_at_step=3)
    for name in cut_weights:
        torch.testing.assert_close(again[name], cut_weights[name])


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    """Each recipe in configs/ parses, its router block is a valid `RouterConfig`, and a recipe it builds on exists,
    so a typo surfaces here rather than after an hour of data preparation."""
    config = TrainConfig.from_yaml(recipe)
    RouterConfig(backbone=config.backbone, **config.router)
    if config.init_from and config.init_from.endswith(".yaml"):
        assert Path(config.init_from).is_file(), f"{recipe.name}: init_from {config.init_from} is missing"
