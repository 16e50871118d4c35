"""The fused head + cross-entropy: the same loss and gradients as the plain path, in one chunk or
many, with ignored targets, without gradients, and under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import model.loss
from infra.settings.train import ModelSettings
from model.gpt import GPT, GPTConfig
from model.loss import linear_cross_entropy


def _case(rows: int = 300, width: int = 32, vocab: int = 1000):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=generator, requires_grad=True)
    weight = (torch.randn(vocab, width, generator=generator) * 0.3).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[::7] = -1
    return hidden, weight, targets


@pytest.mark.parametrize("chunk_rows", [1000, 64, 7])  # one chunk; several; a ragged last one
def test_same_loss_and_gradients_as_the_plain_path(monkeypatch, chunk_rows):
    monkeypatch.setattr(model.loss, "CHUNK_BYTES", 4 * 1000 * chunk_rows)
    hidden, weight, targets = _case()
    plain = F.cross_entropy(hidden @ weight.t(), targets, ignore_index=-1)
    plain_grads = torch.autograd.grad(3 * plain, (hidden, weight))
    fused = linear_cross_entropy(hidden, weight, targets)
    fused_grads = torch.autograd.grad(3 * fused, (hidden, weight))  # the upstream gradient is applied
    assert abs(plain.item() - fused.item()) < 1e-6
    for a, b in zip(plain_grads, fused_grads):
        assert (a - b).abs().max() < 1e-6
    assert fused_grads[0][::7].abs().max() == 0  # an ignored target sends nothing back


def test_without_gradients_and_with_every_target_ignored():
    hidden, weight, targets = _case()
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    assert loss.grad_fn is None
    assert abs(loss.item() - F.cross_entropy(hidden @ weight.t(), targets, ignore_index=-1).item()) < 1e-6
    assert linear_cross_entropy(hidden, weight, torch.full_like(targets, -1)).isnan()  # as F.cross_entropy


def test_bf16_autocast_matches_the_plain_path_to_bf16_precision():
    hidden, weight, targets = _case()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy((hidden @ weight.t()).float(), targets, ignore_index=-1)
        fused = linear_cross_entropy(hidden, weight, targets)
    plain_grads = torch.autograd.grad(plain, (hidden, weight))
    fused_grads = torch.autograd.grad(fused, (hidden, weight))
    assert fused.dtype == torch.float32 and abs(plain.item() - fused.item()) < 1e-3
    for a, b in zip(plain_grads, fused_grads):
        assert b.dtype == torch.float32 and (a - b).abs().max() < 2e-2 * a.abs().max()


@pytest.mark.parametrize("tie", [False, True])
def test_the_model_trains_on_it_exactly_as_on_the_plain_loss(tie):
    settings = ModelSettings(n_layer=2, n_head=4, n_kv_head=2, n_embd=64, seq_len=32, tie_embeddings=tie)
    model = GPT(GPTConfig.from_settings(settings, vocab_size=500), seed=1)
    idx = torch.randint(0, 500, (3, 33), generator=torch.Generator().manual_seed(1))
    inputs, targets = idx[:, :-1], idx[:, 1:]
    parameters = list(model.parameters())
    fused = torch.autograd.grad(model(inputs, targets), parameters)
    plain = torch.autograd.grad(F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten()), parameters)
    for a, b in zip(fused, plain):
        assert (a - b).abs().max() < 1e-6
