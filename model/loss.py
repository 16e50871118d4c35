"""Next-token cross-entropy fused with the output head, computed in chunks of rows.

    loss = linear_cross_entropy(hidden, lm_head.weight, targets)   # == F.cross_entropy(hidden @ W.T, targets)

With a realistic vocabulary the head is the biggest tensor of a step: 16 x 256 tokens x 32768
logits are 537 MB of float32, and the plain path (`F.cross_entropy(logits)`) also writes the
log-softmax as big, a zero-filled gradient as big, and reads them all back in the backward.
Here each chunk of rows makes its logits in one buffer reused by every chunk, turns them in place
into exp(logit - max), and keeps only what the step needs: the loss, d hidden (rows x width) and
d weight (vocab x width). The gradient of the logits, softmax - one-hot, is never written out:
its 1/sum and its one-hot part are applied to the small factors instead (the rows of `hidden`
and of d hidden), so the big buffer sees one matrix product, one max, one exp and one sum, then
is read by the two backward products. The loss and gradients are the same sums (to float
rounding); logits themselves (the path transformers' parity is checked on) never come through here.

Why this shape, on the CPU (bench/bench_train_speed.py, 32768 tokens x 256 wide): logits are
made vocabulary-major (W @ h.T, vocab x rows), the layout in which MKL's product into a
preallocated buffer runs near its peak, while a fresh 128 MB result per chunk costs its page
faults every time; and torch's log_softmax over rows of 32768 is slower than the max, exp and
sum done separately. Under autocast (bf16 on CUDA) the three products run in the autocast dtype
and the softmax in float32, as the plain path would compute them.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_BYTES = 128 * 2**20  # float32 logits per chunk: large enough to keep the matrix products efficient


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, need_grad: bool) -> Tensor:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        vocab = weight.shape[0]
        with torch.autocast(device, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            valid = targets != ignore_index
            picked = targets.clamp(min=0)
            rows = max(1, CHUNK_BYTES // (4 * vocab))
            buffer = torch.empty(vocab * min(rows, h.shape[0]), device=hidden.device, dtype=dtype)
            total = torch.zeros((), device=hidden.device, dtype=torch.float32)
            if need_grad:
                grad_hidden = torch.empty_like(hidden)
                grad_weight = torch.zeros_like(weight, dtype=torch.float32)
            for start in range(0, h.shape[0], rows):
                h_chunk, v_chunk, t_chunk = h[start : start + rows], valid[start : start + rows], picked[start : start + rows]
                logits = torch.mm(w, h_chunk.t(), out=buffer[: vocab * len(h_chunk)].view(vocab, len(h_chunk))).float()
                target_logits = logits[t_chunk, torch.arange(len(h_chunk), device=h.device)]
                top = logits.amax(dim=0)
                sums = logits.sub_(top).exp_().sum(dim=0)  # logits now hold exp(logit - max), softmax * sums
                total += torch.where(v_chunk, sums.log() + top - target_logits, 0.0).sum()
                if not need_grad:
                    continue
                # d loss / d logits = exp / sums - one-hot on valid rows (the 1/count comes in backward):
                # the per-row factor goes onto the small operands and the one-hot is a gather / index_add.
                keep, h_float = v_chunk[:, None], h_chunk.float()
                scale = keep / sums[:, None]
                probs, h_scaled = logits.to(dtype), (h_float * scale).to(dtype)
                grad_hidden[start : start + rows] = ((probs.t() @ w).float() * scale - w[t_chunk].float() * keep).to(hidden.dtype)
                if dtype == torch.float32:
                    grad_weight.addmm_(probs, h_scaled)  # accumulated in place, no temporary
                else:
                    grad_weight += (probs @ h_scaled).float()
                grad_weight.index_add_(0, t_chunk, h_float * keep, alpha=-1)
            count = valid.sum()
        if need_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype), count)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        return grad_hidden * scale, grad_weight * scale, None, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -1) -> Tensor:
    """Mean cross-entropy of `hidden @ weight.T` (N x vocab) against `targets` (N), skipping
    targets equal to `ignore_index`; NaN when every target is ignored, as F.cross_entropy."""
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    apply = _apply_eager if hidden.device.type == "cpu" else _LinearCrossEntropy.apply
    return apply(hidden, weight, targets, ignore_index, need_grad)


# Under torch.compile, inductor's rewrite of this hand-fused loop ran the CPU bench step slower
# than eager (4.01 s against 3.39 s), so on the CPU the loss stays eager (a graph break before
# it). On CUDA it is left to inductor, whose fusing of the max/exp/sum passes is what a GPU wants.
_apply_eager = torch.compiler.disable(_LinearCrossEntropy.apply)
