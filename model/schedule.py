"""The learning-rate schedule: a pure function of the optimizer step, so resuming needs no state.

    lr = settings.lr * lr_multiplier(step, settings)      # step counts from 0

- warmup: the first `warmup_steps` steps rise linearly to the peak (step 0 already at
  1/warmup_steps of it, so no step is wasted at zero);
- then `cosine`: half a cosine from the peak down to `min_lr_ratio` of it at the last step;
- or `wsd` (warmup-stable-decay): the peak held, then the last `decay_fraction` of the steps
  decaying linearly to `min_lr_ratio` (the schedule of MiniCPM and nanochat's "warmdown"; a run
  can be extended from any checkpoint before the decay);
- or `constant`: the peak after warmup.
"""

from __future__ import annotations

import math

from infra.settings.train import TrainSettings


def lr_multiplier(step: int, settings: TrainSettings) -> float:
    """The learning rate of optimizer step `step` (0-based), as a fraction of the peak."""
    warmup, total, floor = settings.warmup_steps, settings.max_steps, settings.min_lr_ratio
    if step < warmup:
        return (step + 1) / warmup
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - 1 - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_steps = max(1, round(settings.decay_fraction * total))
    decay_start = max(warmup, total - decay_steps)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / max(1, total - decay_start))
    return 1.0 - (1.0 - floor) * progress
