"""Next-token cross-entropy fused with the output head, computed in chunks of rows.

    loss = linear_cross_entropy(hidden, lm_head.weight, targets)   # == F.cross_entropy(hidden @ W.T, targets)

With a realistic vocabulary the head is the biggest tensor of a step: 16 x 256 tokens x 32768
logits are 537 MB of float32, and the plain path (`F.cross_entropy(logits)`) also writes the
log-softmax as big, a zero-filled gradient as big, and reads them all back in the backward.
Here each chunk of rows makes its logits, takes their log-sum-exp and the loss, and (when a
gradient is wanted) turns them in place into the gradient of the logits, softmax - one-hot, of
which it keeps only the two products that matter: d hidden (rows x width) and d weight (vocab x
width). Memory for the logits drops to one chunk, and the elementwise passes over them from
about eight to three. The loss and gradients are the same sums (to float rounding); logits
themselves (the path transformers' parity is checked on) never come through here.

Under autocast (bf16 on CUDA) the three products run in the autocast dtype and the softmax in
float32, as the plain path would compute them.
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
        with torch.autocast(device, enabled=False):
            h, w = hidden.to(dtype), weight.to(dtype)
            valid = (targets != ignore_index)[:, None]
            rows = max(1, CHUNK_BYTES // (4 * weight.shape[0]))
            total = torch.zeros((), device=hidden.device, dtype=torch.float32)
            grad_hidden, grad_weight = [], torch.zeros_like(weight, dtype=torch.float32) if need_grad else None
            for start in range(0, h.shape[0], rows):
                h_chunk, v_chunk = h[start : start + rows], valid[start : start + rows]
                picked = targets[start : start + rows, None].clamp(min=0)
                log_probs = torch.log_softmax((h_chunk @ w.t()).float(), dim=1)
                total -= torch.where(v_chunk, log_probs.gather(1, picked), 0.0).sum()
                if not need_grad:
                    continue
                # d loss / d logits = (softmax - one-hot) / count, made in place; the 1/count is applied
                # in backward and ignored rows are masked in the small factors, not in this big one.
                grad = log_probs.exp_().scatter_add_(1, picked, torch.full(picked.shape, -1.0, device=h.device))
                grad = grad.to(dtype)
                grad_hidden.append(((grad @ w) * v_chunk).to(hidden.dtype))
                if dtype == torch.float32:
                    grad_weight.addmm_(grad.t(), h_chunk * v_chunk)  # accumulated in place, no temporary
                else:
                    grad_weight += (grad.t() @ (h_chunk * v_chunk)).float()
            count = valid.sum()
        if need_grad:
            ctx.save_for_backward(torch.cat(grad_hidden), grad_weight.to(weight.dtype), count)
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
    return _LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, need_grad)
