"""The shared per-token RL quantities: log-probabilities, KL estimators, masked statistics."""

from __future__ import annotations

import torch

from model.rl import entropy, gather_logprobs, kl_estimate, masked_mean, masked_whiten


def test_gather_logprobs_equals_log_softmax():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    expected = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(gather_logprobs(logits, targets), expected, atol=1e-6)


def test_kl_estimators_are_unbiased_where_they_should_be_and_k3_never_negative():
    generator = torch.Generator().manual_seed(2)
    p = torch.softmax(torch.randn(6, generator=generator), 0)
    q = torch.softmax(torch.randn(6, generator=generator), 0)
    exact = (p * (p / q).log()).sum()
    samples = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    logp, logq = p.log()[samples], q.log()[samples]
    assert abs(kl_estimate(logp, logq, "k1").mean() - exact) < 0.01
    k3 = kl_estimate(logp, logq, "k3")
    assert abs(k3.mean() - exact) < 0.01 and (k3 >= 0).all()
    assert torch.equal(kl_estimate(logp, logp, "k3"), torch.zeros_like(logp))


def test_masked_statistics_ignore_what_is_masked():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(values, mask).item() == 2.75
    assert torch.allclose(masked_mean(values, mask, dim=1), torch.tensor([1.5, 4.0]))
    whitened = masked_whiten(values, mask)
    assert abs(masked_mean(whitened, mask).item()) < 1e-6
    assert abs(masked_mean(whitened.pow(2), mask).item() - 1) < 1e-4


def test_entropy_of_uniform_is_log_vocab():
    assert torch.allclose(entropy(torch.zeros(3, 8)), torch.full((3,), torch.log(torch.tensor(8.0))))
