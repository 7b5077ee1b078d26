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
        self._pairs: tuple | None = None  # (model, averaged, trained, counters), see update

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        if self._pairs is None or self._pairs[0] is not model:
            self._pairs = (model, *self._pair(model))
        _, averages, values, counters = self._pairs
        # one fused multi-tensor update, not two small operations per tensor: on a GPU a
        # small network's step is bound by how many operations are launched
        torch._foreach_lerp_(averages, values, 1 - d)
        for avg, value in counters:  # counters (batch-norm's num_batches_tracked)
            avg.copy_(value)

    def _pair(self, model: torch.nn.Module) -> tuple[list, list, list]:
        """The averaged tensors and the trained ones they follow (the same storage as the
        model's, so the pairing holds while the model lives), floating point and counters."""
        trained = model.state_dict()
        averages, values, counters = [], [], []
        for name, avg in self.module.state_dict().items():
            value = trained[name].detach()
            if avg.dtype.is_floating_point and value.dtype == avg.dtype:
                averages.append(avg)
                values.append(value)
            elif avg.dtype.is_floating_point:
                raise ValueError(f"{name}: averaged as {avg.dtype}, trained as {value.dtype}")
            else:
                counters.append((avg, value))
        return averages, values, counters
