"""Two segmentation models behind one interface: a small U-Net and a 1-channel Mask R-CNN.

Both take normalised single-channel images ``(N, 1, H, W)``; ``loss`` gives the
training loss of a batch and ``predict_classes`` a class map per image
(0 = background, ``i`` = class ``i``). Instances of the U-Net come from
connected components; Mask R-CNN predicts them directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.model import BioAnomalyError


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = min(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A U-Net (Ronneberger et al. 2015) with GroupNorm, for 1-channel input.

    ``depth`` poolings; widths ``base * 2**level``. With ``base=8, depth=4`` (the
    default of :class:`~.config.TrainConfig`) it has about 0.5 M parameters; with
    ``base=16`` about 1.9 M, each step costing 3x as much on a CPU.
    Input sides must be multiples of ``2**depth``.
    """

    def __init__(
        self, n_classes: int, base: int = 16, depth: int = 4, in_channels: int = 1
    ) -> None:
        super().__init__()
        self.depth = depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(cin, w, 2, stride=2))
            self.merge.append(_block(2 * w, w))
            cin = w
        self.head = nn.Conv2d(cin, n_classes + 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, merge in zip(self.up, self.merge, strict=True):
            x = up(x)
            x = merge(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


def unet_loss(
    logits: torch.Tensor, classes: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Class cross-entropy (weighted by ``class_weights`` if given), plus
    foreground-vs-background BCE and soft Dice.

    Anomalies cover few pixels and come in several classes: the two foreground
    terms look at "any anomaly" (probability ``1 - p(background)``), so the
    model learns where anomalies are even while it still confuses their classes.
    With several classes, half of the Dice term is the mean of one Dice per class
    present in the batch (as nnU-Net does): a class of small defects counts as much
    as one of large ones, where pixel cross-entropy alone lets the large class win
    every doubtful pixel (measured on NEU-Seg: small inclusions were never predicted).
    With one class the two halves are the same Dice.
    """
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    logits = logits.float()
    ce = F.cross_entropy(logits, classes, weight=weight)
    fg_logit = torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]
    fg = (classes > 0).float()
    bce = F.binary_cross_entropy_with_logits(fg_logit, fg)
    dice = soft_dice(torch.sigmoid(fg_logit), fg)
    if logits.shape[1] > 2:
        # the mean over the classes present, by a mask rather than a test per class: a
        # test would make the host wait for the GPU three times a step
        prob = torch.softmax(logits, dim=1)
        n = logits.shape[1]
        target = F.one_hot(classes, n).permute(0, 3, 1, 2).float()
        present = (target[:, 1:].sum(dim=(0, 2, 3)) > 0).float()
        per_class = torch.stack([soft_dice(prob[:, c], target[:, c]) for c in range(1, n)])
        count = present.sum()
        mean = (per_class * present).sum() / count.clamp(min=1.0)
        dice = torch.where(count > 0, 0.5 * dice + 0.5 * mean, dice)
    return ce + bce + dice


def soft_dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Dice`` of a probability map and a binary target over the whole batch."""
    return 1.0 - (2 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)


#: Proposals per image that train Mask R-CNN's box and mask heads (torchvision: 512, sized
#: for 800-1333 px photographs with dozens of objects). A tile holds a few anomalies; Fast
#: R-CNN trained on 64 per image. On a CPU the heads' share of a step (RoIAlign's backward
#: above all) falls with them: a step of 4 tiles 1.75x faster at 128 and 256 px
#: (``benchmarks/bench_maskrcnn.py``).
ROIS_PER_IMAGE = 128


def predict_proposals(size: int) -> int:
    """Proposals the box head scores per tile of ``size`` px when predicting: 300 up to
    512 px (Faster R-CNN's test setting, for 600x1000 px photographs), then growing with
    the area to torchvision's 1,000 (for 800-1333 px). The box head's cost is per
    proposal; at most 100 detections a tile are kept either way."""
    return min(1000, max(300, round(300 * size * size / 512**2)))


def maskrcnn(n_classes: int, size: int, weights: str | Path | None = None) -> nn.Module:
    """torchvision Mask R-CNN (ResNet-50 FPN) with a true 1-channel input.

    No downloads: ``weights=None, weights_backbone=None``. The first convolution
    takes one channel and the transform normalises one channel; images are used
    at ``size`` (tile or full image side), not shrunk to 800 px; the heads train on
    :data:`ROIS_PER_IMAGE` proposals of each tile. A local weights
    file (a state dict, loaded with ``weights_only=True``) may be given: RGB
    first-layer weights are summed to one channel; heads whose shapes differ
    (another number of classes) are left as initialised.
    """
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    model = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=n_classes + 1,
        image_mean=[0.5],
        image_std=[0.25],
        min_size=size,
        max_size=size,
        box_batch_size_per_image=ROIS_PER_IMAGE,
        rpn_post_nms_top_n_test=predict_proposals(size),
    )
    model.backbone.body.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise BioAnomalyError(f"{weights}: cannot read weights ({exc})") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise BioAnomalyError(f"{weights}: not a state dict")
        conv = "backbone.body.conv1.weight"
        if conv in state and state[conv].shape[1] == 3:
            state[conv] = state[conv].sum(dim=1, keepdim=True)
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(usable, strict=False)
    return model


def maskrcnn_targets(
    classes: torch.Tensor, instances: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """Mask R-CNN targets (boxes, labels, masks) from class and instance masks of a batch."""
    targets = []
    for cls, inst in zip(classes, instances, strict=True):
        ids = torch.unique(inst)
        ids = ids[ids > 0]
        masks = inst[None] == ids[:, None, None]
        boxes, labels, keep = [], [], []
        for k, m in enumerate(masks):
            rows = torch.where(m.any(dim=1))[0]
            cols = torch.where(m.any(dim=0))[0]
            if len(rows) == 0:
                continue
            boxes.append(torch.stack([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]).float())
            labels.append(cls[m][0])
            keep.append(k)
        device = classes.device
        targets.append(
            {
                "boxes": torch.stack(boxes) if boxes else torch.zeros((0, 4), device=device),
                "labels": torch.stack(labels).long()
                if labels
                else torch.zeros(0, dtype=torch.int64, device=device),
                "masks": masks[keep].to(torch.uint8)
                if keep
                else torch.zeros((0, *inst.shape), dtype=torch.uint8, device=device),
            }
        )
    return targets


def build(
    kind: str, n_classes: int, tile: int, base: int = 16, weights: str | None = None
) -> nn.Module:
    """The network of ``kind`` for ``n_classes`` anomaly classes (the forest is no network)."""
    if kind == "unet":
        return UNet(n_classes, base=base)
    if kind == "maskrcnn":
        return maskrcnn(n_classes, tile, weights)
    raise BioAnomalyError(f"unknown model {kind!r}")


def loss(
    kind: str,
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    instances: torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Training loss of a batch (the model is in training mode).

    ``class_weights`` (background first) weight the U-Net's cross-entropy.
    """
    if kind == "unet":
        return unet_loss(model(images), classes, class_weights)
    losses = model(list(images), maskrcnn_targets(classes, instances))
    return sum(losses.values())


@torch.no_grad()
def predict_classes(
    kind: str, model: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class maps ``(N, H, W)`` and foreground probabilities ``(N, H, W)`` (model in eval mode).

    U-Net: a pixel is an anomaly where ``1 - p(background) > 0.5``, of its most
    probable anomaly class.
    For Mask R-CNN, every detection the model returns (torchvision keeps those scoring at
    least 0.05, at most 100 a tile) is painted in order of increasing score (the most
    confident wins where masks overlap); the probability is the mask probability times
    the detection score, so the operating point's threshold, chosen on validation, is
    also the cut on scores (not a fixed 0.5 that hides a model whose scores are all
    lower).
    """
    if kind == "unet":
        # foreground where p(any anomaly) > 0.5, then its most likely class: an argmax
        # over all classes would call background what is 70% "some anomaly"
        prob = torch.softmax(model(images).float(), dim=1)
        fg = 1.0 - prob[:, 0]
        return torch.where(fg > 0.5, prob[:, 1:].argmax(dim=1) + 1, 0), fg
    n, _, h, w = images.shape
    out = torch.zeros((n, h, w), dtype=torch.int64, device=images.device)
    fg = torch.zeros((n, h, w), dtype=torch.float32, device=images.device)
    for i, det in enumerate(model(list(images))):
        order = torch.argsort(det["scores"])
        for k in order:
            score = det["scores"][k]
            m = det["masks"][k, 0]
            out[i][m > 0.5] = det["labels"][k]
            fg[i] = torch.maximum(fg[i], m * score)
    return out, fg
