"""What training says while it runs and what it leaves: typed events and the result.

Every trainer (networks, forest, memory bank) yields :class:`TrainEvent` and
returns a :class:`TrainResult`, whose best score is named by what it measures
(:data:`SCORE_LABELS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import operating
from ..core.model import ImageRecord
from .config import REGISTRY

#: The score of supervised models (see :func:`~napari_bioanomaly.core.operating.f1_score`).
VAL_F1 = "validation F1 (mean of instance and pixel F1)"
#: Their score when the annotations are thin structures (criterion ``pixel``).
VAL_PIXEL_F1 = "validation pixel F1 (thin structures)"

#: What the best checkpoint's score measures, by model kind (it is named so everywhere).
SCORE_LABELS = {
    name: VAL_F1 if info.learns_classes else "validation image ROC-AUC"
    for name, info in REGISTRY.items()
}


def score_label(model: str, criterion: str = "mean") -> str:
    """What a model's best score is named: :data:`SCORE_LABELS`, or :data:`VAL_PIXEL_F1`
    for a supervised model chosen by pixel F1."""
    if criterion == "pixel" and SCORE_LABELS[model] == VAL_F1:
        return VAL_PIXEL_F1
    return SCORE_LABELS[model]


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a training run.

    ``kind`` is ``"step"`` (after each optimiser step), ``"epoch"`` (after each
    validation, with the validation fields set), ``"status"`` (``message`` says
    what the run is doing, e.g. calibrating) or ``"warning"`` (``message``
    says what happened, e.g. the batch was halved after running out of memory).

    ``val_score`` is the score the best model is chosen by, named by ``score_label``
    (:func:`score_label`, as :meth:`TrainResult.best_text` names it); ``val_f1`` is the
    instance F1 alone, one of its parts.
    """

    kind: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float | None = None
    val_loss: float | None = None
    val_iou: float | None = None
    val_f1: float | None = None
    lr: float | None = None
    sec_per_step: float | None = None
    data_fraction: float | None = None
    eta_s: float | None = None
    batch: int | None = None
    message: str = ""
    val_auc: float | None = None
    val_pixel_auc: float | None = None
    val_score: float | None = None
    score_label: str = ""

    def score_text(self) -> str:
        """The validation scores of an epoch event, e.g. "validation F1 (mean of instance
        and pixel F1) 0.188 (instance F1 0.026, pixel IoU 0.212)"; "" without them."""
        parts = []
        if self.val_f1 is not None:
            parts.append(f"instance F1 {self.val_f1:.3f}")
        if self.val_iou is not None:
            parts.append(f"pixel IoU {self.val_iou:.3f}")
        if self.val_score is not None:
            label = self.score_label or VAL_F1
            return f"{label} {self.val_score:.3f}" + (f" ({', '.join(parts)})" if parts else "")
        if self.val_auc is not None or self.val_pixel_auc is not None:
            auc = [f"validation image ROC-AUC {_num(self.val_auc)}"]
            if self.val_pixel_auc is not None:
                auc.append(f"pixel AUROC {self.val_pixel_auc:.3f}")
            return ", ".join(auc)
        return ", ".join(f"validation {p}" for p in parts)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclass
class TrainResult:
    """What a finished (or cancelled) run leaves behind."""

    best: Path | None
    last: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_f1: float | None = None
    cancelled: bool = False
    device: str = "cpu"
    #: what ``best_f1`` measures: :data:`VAL_F1`, "validation image ROC-AUC" (see
    #: :data:`SCORE_LABELS`), or, without those, "validation loss" or "training loss"
    #: (then ``best_f1`` is the loss negated, so that higher is always better)
    best_label: str = VAL_F1
    #: threshold and minimum area chosen on the validation images (``None``: not chosen)
    operating_point: operating.OperatingPoint | None = None
    #: the point chosen on maps averaged for test-time augmentation (``None``: not chosen)
    tta_point: operating.OperatingPoint | None = None

    def best_text(self) -> str:
        """The best score named by what it is, e.g. ``validation F1 0.712``."""
        if self.best_f1 is None:
            return f"{self.best_label} n/a"
        if self.best_label.endswith("loss"):
            return f"{self.best_label} {-self.best_f1:.4f} (lower is better)"
        return f"{self.best_label} {self.best_f1:.3f}"


@dataclass(frozen=True)
class PredictEvent:
    """Progress of a prediction run: ``index`` of ``total`` images done. ``message``: why
    the image was not predicted (it could not be read, or its prediction failed; then
    ``record`` is None and the image is not in the predictions); ``note``: what to know of
    one that was (a stack of which the first plane was predicted)."""

    index: int
    total: int
    image: str
    regions: int
    message: str = ""
    record: ImageRecord | None = None
    skipped: bool = False
    note: str = ""
