"""The shared per-token RL quantities: log-probabilities, KL estimators, masked statistics, the
clipped surrogate and distinct-n."""

from __future__ import annotations

import torch

from model.rl import clipped_surrogate, distinct_n, entropy, gather_logprobs, kl_estimate, masked_mean, masked_whiten


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


def test_clipped_surrogate_clips_each_side_where_it_should():
    old = torch.zeros(6)
    ratios = torch.tensor([1.0, 1.5, 1.5, 0.5, 0.5, 1.25])
    advantages = torch.tensor([2.0, 1.0, -1.0, -1.0, 1.0, 1.0])
    logp = ratios.log().requires_grad_()
    loss, clipped = clipped_surrogate(logp, old, advantages, clip_low=0.2, clip_high=0.28)
    # r A unclipped, except r=1.5 with A>0 (capped at 1.28) and r=0.5 with A<0 (floored at 0.8)
    assert torch.allclose(loss, torch.tensor([-2.0, -1.28, 1.5, 0.8, -0.5, -1.25]))
    assert clipped.tolist() == [False, True, False, True, False, False]
    loss.sum().backward()
    assert (logp.grad[clipped] == 0).all() and (logp.grad[~clipped] != 0).all()  # no gradient through the clip


def test_distinct_n_pools_the_replies():
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == 3 / 4  # (1,2) twice, (2,3), (2,4)
    assert distinct_n([[5, 5, 5, 5]], 2) == 1 / 3
    assert distinct_n([[1], []], 2) == 0.0
