"""Patch descriptors of the memory bank computed by networks (no pretrained one can be
downloaded).

As PatchCore does with a pretrained backbone, a pixel's descriptor is a network's
mid-level features around it: levels 1 and 2 of a U-Net encoder (strides 2 and 4,
``2 * base`` and ``4 * base`` channels), each averaged over its 5 x 5
neighbourhood, at a common stride. The encoder is either

- ``random``: several encoders with random weights (:class:`EncoderEnsemble`), their
  descriptors concatenated. On KolektorSDD one random encoder gave 0.58-0.94 image
  ROC-AUC over six draws of weights; three together 0.88 (two disjoint sets), against
  0.785 for the filter responses (``docs/benchmarks.md``). On CrackForest, NEU-Seg and
  the hard sample the filter responses did better, hence the ``auto`` default of the
  trainer (:mod:`.train_memory`);
- ``learned``: one U-Net trained here, on the normal images, by masked-image
  reconstruction (:mod:`.pretrain`): 0.71-0.83 / 0.87-0.91 (image ROC-AUC / pixel
  AUROC) on KolektorSDD from run to run, not reliably better than random weights.
  Deeper levels (3) and the decoder did worse.

Images of any size are described in overlapping windows, so memory stays that of
one window.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import UNet, _block

#: Encoder levels whose features make the descriptor, and their neighbourhood (levels'
#: own pixels) averaged.
LEVELS, POOL = (1, 2), 5
#: Random-weight encoders of a ``random`` memory bank (:class:`EncoderEnsemble`).
ENCODERS = 4
#: Window side (pixels of the image) and the margin added on each side.
WINDOW, MARGIN = 768, 48


class PatchEncoder(nn.Module):
    """The first ``max(LEVELS) + 1`` blocks of a :class:`~.models.UNet` of width ``base``:
    same layer names (``down.0`` ...), so a U-Net's weights load into it directly."""

    def __init__(self, base: int = 16) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(max(LEVELS) + 1)]
        self.base = base
        self.down = nn.ModuleList(
            _block(cin, cout) for cin, cout in zip([1, *widths[:-1]], widths, strict=True)
        )

    @property
    def dims(self) -> int:
        """Length of a descriptor."""
        return descriptor_dims(self.base)

    @classmethod
    def from_unet(cls, unet: UNet, base: int) -> PatchEncoder:
        """The encoder of a (pretrained) U-Net, a copy of its weights."""
        encoder = cls(base)
        own = encoder.state_dict().keys()
        encoder.load_state_dict({k: v.detach().clone() for k, v in unet.state_dict().items()
                                 if k in own})  # fmt: skip
        return encoder

    def forward(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        """Descriptors ``(N, dims, H / stride, W / stride)`` of images ``(N, 1, H, W)``
        whose sides are multiples of 4."""
        size = (x.shape[-2] // stride, x.shape[-1] // stride)
        out = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level in LEVELS:
                pooled = F.avg_pool2d(x, POOL, 1, POOL // 2, count_include_pad=False)
                out.append(F.interpolate(pooled.float(), size=size, mode="bilinear",
                                         align_corners=False))  # fmt: skip
            if level < len(self.down) - 1:
                x = F.max_pool2d(x, 2)
        return torch.cat(out, dim=1)


class EncoderEnsemble(nn.Module):
    """``members`` :class:`PatchEncoder` s of width ``base`` whose descriptors are
    concatenated: with random weights (``descriptors="random"``), each draw of weights
    sees the texture differently and which draw suits a dataset cannot be told from its
    normal images; together they are steadier than any one of them (KolektorSDD, one
    bank: one encoder 0.58-0.94 image ROC-AUC over six draws, docs/benchmarks.md).

    ``seed`` fixes the random weights without touching the global random state; they are
    saved with the bank all the same."""

    def __init__(self, base: int = 16, members: int = ENCODERS, seed: int | None = None) -> None:
        super().__init__()
        self.base = base
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.members = nn.ModuleList(PatchEncoder(base) for _ in range(members))

    @property
    def dims(self) -> int:
        """Length of a descriptor: the members' together."""
        return len(self.members) * descriptor_dims(self.base)

    def forward(self, x: torch.Tensor, stride: int) -> torch.Tensor:
        """Descriptors ``(N, dims, H / stride, W / stride)``, as :meth:`PatchEncoder.forward`."""
        return torch.cat([member(x, stride) for member in self.members], dim=1)


def descriptor_network(kind: str, base: int, members: int = ENCODERS) -> nn.Module:
    """The (untrained) descriptor network of a memory bank of ``kind`` descriptors:
    ``learned`` one :class:`PatchEncoder`, ``random`` an :class:`EncoderEnsemble`."""
    if kind == "learned":
        return PatchEncoder(base)
    if kind == "random":
        return EncoderEnsemble(base, members)
    raise ValueError(f"{kind} descriptors need no network")


def descriptor_dims(base: int) -> int:
    """Length of the descriptors of an encoder of width ``base``."""
    return sum(base * 2**level for level in LEVELS)


@torch.no_grad()
def describe(
    norm: np.ndarray,
    encoder: PatchEncoder | EncoderEnsemble,
    stride: int,
    device: torch.device | str = "cpu",
    window: int = WINDOW,
) -> np.ndarray:
    """Descriptors ``(ceil(H / stride), ceil(W / stride), dims)`` of a normalised image,
    computed in equal windows of at most ``window`` pixels (plus margins) so big
    images fit."""
    if stride not in (1, 2, 4):
        raise ValueError(f"stride must be 1, 2 or 4, not {stride}")
    encoder.eval()
    h, w = norm.shape
    oh, ow = -(-h // stride), -(-w // stride)
    out = np.empty((oh, ow, encoder.dims), dtype=np.float32)
    padded = np.pad(norm, MARGIN, mode="reflect")
    # equal windows of at most `window` px, starting on multiples of 4: GroupNorm sees
    # statistics of similar areas everywhere
    unit = 4
    row_step = -(-h // -(-h // window) // unit) * unit
    col_step = -(-w // -(-w // window) // unit) * unit
    for r0 in range(0, h, row_step):
        for c0 in range(0, w, col_step):
            r1, c1 = min(r0 + row_step, h), min(c0 + col_step, w)
            rows = -(-(r1 - r0 + 2 * MARGIN) // unit) * unit
            cols = -(-(c1 - c0 + 2 * MARGIN) // unit) * unit
            crop = padded[r0 : r0 + rows, c0 : c0 + cols]
            crop = np.pad(crop, ((0, rows - crop.shape[0]), (0, cols - crop.shape[1])),
                          mode="reflect")  # fmt: skip
            x = torch.from_numpy(np.ascontiguousarray(crop))[None, None].to(device)
            feats = encoder(x, stride)[0].permute(1, 2, 0).cpu().numpy()
            m = MARGIN // stride
            fr0, fc0 = r0 // stride, c0 // stride
            fr1, fc1 = -(-r1 // stride), -(-c1 // stride)
            out[fr0:fr1, fc0:fc1] = feats[m : m + fr1 - fr0, m : m + fc1 - fc0]
    return out
