"""An exponential moving average of a network's weights, the copy that is validated,
kept and used for prediction.

Small batches of random tiles make the weights after any one step noisy: on NEU-Seg the
validation score of consecutive epochs moves by +-0.02. The average over the last
~``1 / (1 - decay)`` steps is a better model than any single step's weights, and costs one
multiply-add per weight and step. Early steps are averaged over fewer steps (the decay
grows as ``(1 + t) / (10 + t)`` up to ``decay``), so the first epochs are not dragged back
to the random start.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """``module``: the averaged copy (eval mode, no gradients); ``update`` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float, steps: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.steps = steps

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        trained = model.state_dict()
        for name, avg in self.module.state_dict().items():
            value = trained[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(value.to(avg.dtype), alpha=1 - d)
            else:  # counters (batch-norm's num_batches_tracked)
                avg.copy_(value)
