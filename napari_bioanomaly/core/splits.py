"""Which images train, which validate, which test: seeded, stratified, torch-free.

Used by training (:func:`validation_split`), cross-validation (:func:`folds`) and the
Review widget (which reviews the validation images of a run it started).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .model import BioAnomalyError, Dataset
from .text import counted

#: With ``annotated_validate``, at most this many annotated images validate (or the
#: validation fraction of them, if that is more): enough to choose by, and validation
#: time stays bounded on large studies.
ANNOTATED_VALIDATION = 100


def validation_split(
    dataset: Dataset,
    val_fraction: float = 0.2,
    val_attribute: str | None = None,
    val_values: Sequence[str] = (),
    seed: int = 0,
    annotated_validate: bool = False,
) -> tuple[list[int], list[int]]:
    """Training and validation image indices.

    By file attribute when ``val_attribute`` is set (images whose value is in
    ``val_values`` validate), otherwise a seeded random ``val_fraction`` of the images,
    stratified so that both sides get anomalous images when there are at least two.

    ``annotated_validate`` is for models that learn from normal images only: when at
    least half of the images are normal, every annotated image validates (up to
    :data:`ANNOTATED_VALIDATION`; with ``val_fraction`` of the normal ones), since
    annotations are all such a model can choose its settings by and it would learn
    little from them.
    """
    n = len(dataset.images)
    val: list[int]
    if val_attribute:
        val = [
            i
            for i, im in enumerate(dataset.images)
            if str(im.file_attributes.get(val_attribute, "")) in val_values
        ]
        if not val:
            raise BioAnomalyError(_no_validation_text(dataset, val_attribute, val_values))
        return [i for i in range(n) if i not in set(val)], val
    if val_fraction == 0:
        return list(range(n)), []
    rng = np.random.default_rng(seed)
    anomalous = [i for i, im in enumerate(dataset.images) if im.regions]
    normal = [i for i, im in enumerate(dataset.images) if not im.regions]
    val = []
    everyone = annotated_validate and len(normal) >= max(len(anomalous), 2)
    for group in (anomalous, normal):
        k = round(len(group) * val_fraction)
        if group is anomalous and everyone:
            k = max(k, min(len(group), ANNOTATED_VALIDATION))
        elif group is anomalous and len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        val.extend(rng.permutation(group)[:k].tolist())
    val_set = set(val)
    return [i for i in range(n) if i not in val_set], sorted(val)


def _no_validation_text(dataset: Dataset, attribute: str, wanted: Sequence[str]) -> str:
    """Why no image validates: the values of ``attribute`` the images have, and the ones
    meant where a value asked for differs only in case (``Hela`` for ``HeLa``)."""
    present = sorted({str(im.file_attributes[attribute]) for im in dataset.images
                      if attribute in im.file_attributes})  # fmt: skip
    text = f"no image has {attribute} in {list(wanted)} for validation"
    if not present:
        return f"{text}: no image has the file attribute {attribute!r}"
    shown = ", ".join(present[:20]) + (
        f" and {len(present) - 20} more" if len(present) > 20 else ""
    )
    text += f" (the values of {attribute}: {shown})"
    meant = [p for v in wanted for p in present if p.casefold() == v.casefold()]
    if meant:
        text += (f"; did you mean {','.join(dict.fromkeys(meant))}? (values must match "
                 "exactly, case included)")  # fmt: skip
    return text


def folds(dataset: Dataset, k: int, group_by: str | None = None, seed: int = 0) -> list[list[int]]:
    """Test image indices of each of ``k`` folds; every image is in exactly one.

    Grouped: groups (values of the ``group_by`` file attribute; missing values
    form their own group) go, largest first, to the fold with the fewest images.
    Otherwise anomalous and normal images are shuffled (seeded) and dealt in turn.
    """
    n = len(dataset.images)
    if k < 2:
        raise BioAnomalyError(f"cross-validation needs at least 2 folds, not {k}")
    if group_by:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, im in enumerate(dataset.images):
            groups[str(im.file_attributes.get(group_by, ""))].append(i)
        if not any(group_by in im.file_attributes for im in dataset.images):
            present = sorted({a for im in dataset.images for a in im.file_attributes})
            raise BioAnomalyError(
                f"no image has a {group_by!r} file attribute to group the folds by (the "
                f"images' file attributes: {', '.join(present) or 'none'})"
            )
        if len(groups) < k:
            named = ", ".join(g or "(none)" for g in sorted(groups))
            fewer = f"use --folds {len(groups)} or fewer"
            if len(groups) < 2:  # one fold is no cross-validation
                fewer = "cross-validation needs 2 at least: group by another attribute, or none"
            raise BioAnomalyError(
                f"{counted(len(groups), 'value')} of {group_by} ({named}) cannot fill {k} "
                f"folds: {fewer}"
            )
        out: list[list[int]] = [[] for _ in range(k)]
        for _, members in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
            smallest = min(range(k), key=lambda f: (len(out[f]), f))
            out[smallest].extend(members)
        return [sorted(f) for f in out]
    if n < k:
        raise BioAnomalyError(f"{counted(n, 'image')} cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    anomalous = [i for i, im in enumerate(dataset.images) if im.regions]
    normal = [i for i, im in enumerate(dataset.images) if not im.regions]
    out = [[] for _ in range(k)]
    position = 0
    for group in (anomalous, normal):
        for i in rng.permutation(group).tolist():
            out[position % k].append(i)
            position += 1
    return [sorted(f) for f in out]
