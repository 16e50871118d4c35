"""The GPT itself: shape bookkeeping, deterministic init, and the three attention paths agreeing.

Cached decoding, chunked prefill, packed rows and left-padded batches must compute exactly what
the plain causal forward computes for the same tokens (to float32 rounding).
"""

from __future__ import annotations

import pytest
import torch

from infra.settings.train import ModelSettings
from model.gpt import GPT, GPTConfig, KVCache, attention_mask, document_mask, document_positions

TOL = 1e-5


def _model(**overrides) -> GPT:
    settings = ModelSettings(**{"n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 64, "seq_len": 64, **overrides})
    return GPT(GPTConfig.from_settings(settings, vocab_size=300), seed=3).eval()


@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_matches_the_modules(tie):
    model = _model(tie_embeddings=tie)
    assert model.config.num_params() == sum(p.numel() for p in model.parameters())
    assert model.config.mlp_hidden % 64 == 0 and model.config.mlp_hidden >= 8 * 64 // 3
    assert model.config.flops_per_token() > 6 * model.config.n_layer * 64 * 64


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = _model(), _model(), GPT(_model().config, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.layers[0].mlp.up_proj.weight, c.layers[0].mlp.up_proj.weight)


def test_settings_refuse_shapes_that_cannot_work():
    with pytest.raises(ValueError, match="multiple of model.n_kv_head"):
        ModelSettings(n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="multiple of model.n_head"):
        ModelSettings(n_embd=100, n_head=3)


@torch.no_grad()
def test_cached_decoding_and_chunked_prefill_equal_the_full_forward():
    model = _model()
    idx = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(0))
    full = model(idx)
    cache = KVCache(model.config, 3, 64, "cpu", torch.float32)
    steps = [model(idx[:, :25], cache=cache)] + [model(idx[:, t : t + 1], cache=cache) for t in range(25, 40)]
    assert (torch.cat(steps, 1) - full).abs().max() < TOL
    cache = KVCache(model.config, 3, 64, "cpu", torch.float32)
    chunks = [model(idx[:, :10], cache=cache), model(idx[:, 10:32], cache=cache), model(idx[:, 32:], cache=cache)]
    assert (torch.cat(chunks, 1) - full).abs().max() < TOL


@torch.no_grad()
def test_a_packed_row_computes_what_its_documents_compute_alone():
    model = _model()
    idx = torch.randint(0, 300, (1, 48), generator=torch.Generator().manual_seed(1))
    doc_ids = torch.tensor([[0] * 10 + [1] * 30 + [2] * 8])
    packed = model(idx, positions=document_positions(doc_ids), mask=document_mask(doc_ids))
    for start, end in ((0, 10), (10, 40), (40, 48)):
        assert (packed[0, start:end] - model(idx[:, start:end])[0]).abs().max() < TOL
    assert document_positions(doc_ids)[0, 10].item() == 0 and document_positions(doc_ids)[0, 39].item() == 29


@torch.no_grad()
def test_left_padded_prompts_compute_what_they_compute_unpadded():
    model = _model()
    idx = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(2))
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, :12] = False  # row 1 is an 18-token prompt, left-padded
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    padded = model(idx, positions=positions, mask=attention_mask(valid, 30))
    assert not padded.isnan().any()
    assert (padded[1, 12:] - model(idx[1:, 12:])[0]).abs().max() < TOL
    assert (padded[0] - model(idx[:1])[0]).abs().max() < TOL


def test_loss_ignores_masked_targets_and_starts_near_uniform():
    model = _model()
    idx = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(3))
    targets = idx.roll(-1, 1)
    targets[:, 8:] = -1
    loss = model(idx, targets)
    logits = model(idx)
    expected = torch.nn.functional.cross_entropy(logits[:, :8].flatten(0, 1), targets[:, :8].flatten())
    assert abs(loss.item() - expected.item()) < 1e-5
    assert abs(loss.item() - torch.log(torch.tensor(300.0)).item()) < 0.5


def test_too_long_a_sequence_is_a_clear_error():
    model = _model()
    with pytest.raises(ValueError, match="longer than the model's context of 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than the model's context"):
        KVCache(model.config, 1, 65, "cpu", torch.float32)
