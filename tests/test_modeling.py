"""The model: pretrained behaviour intact at gate 0, cache-exact incremental decoding, composable gists."""

import math

import pytest
import torch

from conftest import FAMILIES, TINY_ROUTER_CONFIG, tiny_backbone
from toolformer_router import RouterConfig
from toolformer_router.modeling import GistMemory, ToolRouterModel


def _model(family: str, **overrides) -> tuple[torch.nn.Module, ToolRouterModel]:
    backbone = tiny_backbone(family, vocab_size=500)
    reference = tiny_backbone(family, vocab_size=500)  # same seed: an untouched copy of the backbone
    config = RouterConfig(**{**TINY_ROUTER_CONFIG, **overrides})
    return reference, ToolRouterModel(backbone, config).eval()


def _memory(model: ToolRouterModel, tools_per_request: list[int]) -> GistMemory:
    generator = torch.Generator().manual_seed(1)
    total = sum(tools_per_request)
    ids = torch.randint(0, 500, (total, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    memory = model.project_memory(model.encode_tools(ids, mask))
    pieces, start = [], 0
    for count in tools_per_request:
        pieces.append(GistMemory.flatten(memory[start : start + count]))
        start += count
    return GistMemory.batch(pieces, pieces[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_gates_at_zero_reproduce_the_backbone_logits(family):
    reference, model = _model(family)
    ids = torch.randint(0, 500, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        actual = model(ids, mask, _memory(model, [2, 1]))
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
        for block in model.cross_attention.values():
            block.gate.fill_(0.5)
        assert (model(ids, mask, _memory(model, [2, 1])) - expected).abs().max() > 1e-3  # the gate does act


@pytest.mark.parametrize("family", FAMILIES)
def test_paper_layout_decoder_range_matches_the_wrapped_layers(family):
    """Decoder = backbone layers 1..3 only: at gate 0 it equals running exactly those layers."""
    reference, model = _model(family, encoder_layers=1, decoder_layers=(1, 4), share_encoder_layers=False)
    ids = torch.randint(0, 500, (1, 6))
    with torch.no_grad():
        hidden = reference.model.embed_tokens(ids)
        positions = torch.arange(6)[None]
        embeddings = reference.model.rotary_emb(hidden, positions)
        causal = torch.full((6, 6), float("-inf")).triu(1)[None, None]
        for layer in reference.model.layers[1:4]:
            hidden = layer(hidden, attention_mask=causal, position_ids=positions, position_embeddings=embeddings)
        expected = reference.lm_head(reference.model.norm(hidden))
        torch.testing.assert_close(model(ids, torch.ones_like(ids), None), expected, rtol=1e-5, atol=1e-5)
    assert model.encoder_layers[0] is not model.decoder_layers[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_incremental_decoding_with_kv_cache_equals_full_pass(family):
    _, model = _model(family)
    for block in model.cross_attention.values():
        block.gate.data.fill_(0.7)
    ids = torch.randint(0, 500, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in row 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    memory = _memory(model, [1, 2])
    with torch.no_grad():
        full = model.decode(ids, mask, positions, memory)
        cache = model.new_cache()
        first = model.decode(ids[:, :6], mask[:, :6], positions[:, :6], memory, cache)
        rest = [model.decode(ids[:, i : i + 1], mask[:, : i + 1], positions[:, i : i + 1], memory, cache)
                for i in range(6, 10)]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1)[mask.bool()], full[mask.bool()], rtol=1e-4, atol=1e-5)


def test_gists_of_a_tool_do_not_depend_on_its_batch_neighbours():
    _, model = _model("llama")
    ids = torch.randint(0, 500, (3, 15))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        together = model.encode_tools(ids, mask)
        alone = model.encode_tools(ids[1:2, :9], mask[1:2, :9])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)


def test_memory_order_does_not_change_the_output():
    _, model = _model("qwen2")
    for block in model.cross_attention.values():
        block.gate.data.fill_(1.0)
    ids = torch.randint(0, 500, (4, 10))
    memory = model.project_memory(model.encode_tools(ids, torch.ones_like(ids)))
    query = torch.randint(0, 500, (1, 7))
    with torch.no_grad():
        forward = model(query, torch.ones_like(query), GistMemory.batch([GistMemory.flatten(memory)], memory[0]))
        backward = model(query, torch.ones_like(query), GistMemory.batch([GistMemory.flatten(memory.flip(0))], memory[0]))
    torch.testing.assert_close(forward, backward, rtol=1e-5, atol=1e-5)


def test_fingerprint_changes_with_memory_weights_only():
    _, model = _model("llama")
    before = model.memory_fingerprint()
    assert model.memory_fingerprint() == before
    with torch.no_grad():
        model.lm_head.weight.mul_(1.0)  # tied to the embeddings, which the gists depend on
    tied_changed = model.memory_fingerprint()
    assert tied_changed == before  # same bytes, same fingerprint
    with torch.no_grad():
        model.gist_pooling.queries.add_(0.01)
    after_pooling = model.memory_fingerprint()
    assert after_pooling != before
    with torch.no_grad():
        model.decoder_layers[-1].mlp.down_proj.weight.add_(0.01)  # not an encoder layer: irrelevant to gists
    assert model.memory_fingerprint() == after_pooling


def test_bad_layer_config_is_rejected():
    with pytest.raises(ValueError, match="decoder_layers"):
        _model("llama", decoder_layers=(2, 9))
    with pytest.raises(ValueError, match="cross_attention_layers"):
        _model("llama", cross_attention_layers=[7])


def test_init_new_modules_can_reset_one_module_only(make_router):
    model = make_router().model
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)
    before = {name: p.clone() for name, p in model.named_parameters()}
    model.init_new_modules(seed=3, names=["selector"])
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {f"selector.{name}" for name, _ in model.selector.named_parameters()}
    assert float(model.selector.logit_scale) == pytest.approx(math.log(1 / 0.07))


def test_a_call_setting_is_not_assigned_top_level_while_set_per_tool_count():
    """With `thresholds_by_tool_count`, assigning a top-level call/no-call field would change no request: it
    raises, and `set_call_threshold` sets the field at every count."""
    from toolformer_router import CallThresholds

    config = RouterConfig(thresholds_by_tool_count={20: CallThresholds(call_bias=0.1), 200: {"call_bias": 0.6}})
    with pytest.raises(ValueError, match="set_call_threshold"):
        config.call_bias = 1.0
    assert [config.call_thresholds(n).call_bias for n in (20, 200)] == [0.1, 0.6]
    config.set_call_threshold("call_bias", -0.5)
    assert [config.call_thresholds(n).call_bias for n in (1, 20, 200, 1000)] == [-0.5] * 4
    config.thresholds_by_tool_count = None
    config.call_bias = 2.0  # one setting everywhere: a plain assignment
    assert config.call_thresholds(20).call_bias == 2.0
