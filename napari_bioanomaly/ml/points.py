"""Choosing a trained model's operating point again, on annotated images.

Training chooses the threshold, minimum areas, minimum peak and class votes on its
validation images (:mod:`.validation`); :func:`choose_point` does it again afterwards,
written back into the checkpoint:

* with ``tta``, the point for test-time augmentation (``operating_point_tta``): maps
  averaged over the 8 flips and rotations peak lower than plain ones, so a point tuned
  to plain maps can lose what the averaging gains (``docs/benchmarks.md``). Training
  chooses it by itself only when that is cheap (:func:`.validation.tta_point_wanted`);
  this is the way to get it for a model trained on a CPU on large images.
* on ``all`` the annotated images of a dataset, e.g. the lab's own images of a new cell
  line, instead of the validation images of the run that trained it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from ..core.chooser import AGAINST_REGIONS, TTA_GAIN, tta_gain_text, tta_pays
from ..core.model import BioAnomalyError, Dataset
from ..core.operating import OperatingPoint
from ..core.text import counted
from . import data
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TTA_MODELS, TrainConfig
from .validation import (
    KEPT_PLAIN,
    POINT_IMAGES,
    Step,
    choose_operating_point_steps,
    drain,
)

#: Which images :func:`choose_point` chooses on.
ON = ("validation", "all")


@dataclass(frozen=True)
class PointChange:
    """What :func:`choose_point` did: the point before (``None``: there was none), the
    point after, the key of the checkpoint it went to and the file, on how many images,
    and the annotated classes the model did not learn (their regions count as background).
    A point for test-time augmentation that does not beat the plain one on the averaged
    maps is the plain one (``kept_plain``); a new plain point drops the point for
    test-time augmentation chosen against the old one (``dropped_tta``). ``plain``: the
    model's plain point after the change; ``plain_before``: what it was, where choosing the
    point for TTA chose the plain one again on the same images (``None``: kept)."""

    before: OperatingPoint | None
    after: OperatingPoint
    key: str
    images: int
    path: Path
    unlearnt: tuple[str, ...] = ()
    dropped_tta: bool = False
    plain: OperatingPoint | None = None
    plain_before: OperatingPoint | None = None

    @property
    def kept_plain(self) -> bool:
        """Whether the point chosen for test-time augmentation is the plain one."""
        return (
            self.key == "operating_point_tta"
            and self.plain is not None
            and self.after.describe(scores=False) == self.plain.describe(scores=False)
        )


def point_images(dataset: Dataset, config: TrainConfig, on: str) -> list[int]:
    """The annotated images to choose on: the validation images of the run ``config``
    made, or all of them."""
    if on not in ON:
        raise BioAnomalyError(f"choose the point on one of {', '.join(ON)}, not {on!r}")
    indices = (
        data.split(dataset, config)[1] if on == "validation" else list(range(len(dataset.images)))
    )
    return [i for i in indices if dataset.images[i].regions]


def choose_point(
    path: str | Path,
    dataset: Dataset,
    tta: bool = False,
    on: str = "validation",
    device: str = "auto",
    out: str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> PointChange:
    """Choose the operating point of the checkpoint ``path`` on the annotated images of
    ``dataset`` (``on``: :data:`ON`), and write the checkpoint with it to ``out``
    (default: ``path``; the previous file is kept as ``.bak``). With ``tta`` the point
    is chosen on maps averaged over the flips and rotations and stored as the point for
    test-time augmentation; the plain point is kept, unless it holds no count of regions
    (chosen before 2026-12-05) or ``on`` is ``all``: then it is chosen again on the same
    images first, so that whether TTA pays compares points chosen alike
    (:func:`~..core.chooser.tta_pays`). ``progress(done, total, name)`` is told of each
    image predicted."""
    return drain(choose_point_steps(path, dataset, tta, on, device, out), progress)


def choose_point_steps(
    path: str | Path,
    dataset: Dataset,
    tta: bool = False,
    on: str = "validation",
    device: str = "auto",
    out: str | Path | None = None,
) -> Generator[Step, None, PointChange]:
    """:func:`choose_point` as a generator that yields ``(done, total, name)`` after each
    image (for napari's worker thread) and returns the :class:`PointChange`."""
    from .predict import Predictor, predict_image

    path = Path(path)
    ckpt = load_checkpoint(path)
    predictor = Predictor.from_checkpoint(path, ckpt, device)
    if tta and predictor.kind not in TTA_MODELS:
        raise BioAnomalyError(f"{path}: a {predictor.kind} model; test-time augmentation "
                              f"applies to {', '.join(TTA_MODELS)} only")  # fmt: skip
    config = predictor.config
    indices = point_images(dataset, config, on)
    if not indices:
        where = (
            "its validation images (--on all: every image)" if on == "validation" else "the dataset"
        )
        raise BioAnomalyError(f"no annotated image among {where}: nothing to choose on")
    classes = dataset.class_names() if config.unsupervised else list(predictor.classes)
    used = {r.label for i in indices for r in dataset.images[i].regions}
    if not config.unsupervised and used and not used & set(classes):
        raise BioAnomalyError(
            f"none of the {counted(len(indices), 'image')} to choose on holds a region of the "
            f"model's classes ({', '.join(classes)}; theirs: {', '.join(sorted(used))}): "
            "choose on the annotations the model learnt from, or others of its classes"
        )
    data.check_images(dataset, indices)
    plain = predictor.operating_point
    # the criterion the plain point maximised (pixel F1 for thin structures) holds for both
    criterion = (
        plain.criterion if plain.source == "validation" and not config.unsupervised else None
    )
    plain_before = None
    if tta and plain.source == "validation" and (plain.regions is None or on == "all"):
        # whether TTA pays (chooser.tta_pays) compares both points, each chosen on the same
        # images: the plain point is chosen again on these (one pass; on the validation
        # images of its run, the point training chose)
        plain_before = plain
        plain = yield from choose_operating_point_steps(
            lambda image: predict_image(predictor, image)[0], dataset, indices, classes,
            criterion,
        )  # fmt: skip
    # the point for averaged maps must beat the plain one there (chooser.choose_against)
    point = yield from choose_operating_point_steps(
        lambda image: predict_image(predictor, image, tta=tta)[0], dataset, indices, classes,
        criterion, against=plain if tta else None,
    )  # fmt: skip
    if point.source != "validation":
        raise BioAnomalyError("no operating point could be chosen on these images")
    key = "operating_point_tta" if tta else "operating_point"
    before = predictor.tta_point if tta else plain
    target = Path(out) if out is not None else path
    state = {**ckpt, key: point.to_dict()}
    if plain_before is not None:
        state["operating_point"] = plain.to_dict()
    # a point for averaged maps was judged against the plain point it replaces: a new
    # plain point leaves it without its reason, so it goes (choose it again with tta)
    dropped_tta = not tta and state.pop("operating_point_tta", None) is not None
    save_checkpoint(target, state)
    unlearnt = () if config.unsupervised else tuple(sorted(used - set(classes)))
    return PointChange(
        before,
        point,
        key,
        min(len(indices), POINT_IMAGES),
        target,
        unlearnt,
        dropped_tta,
        plain=plain if tta else point,
        plain_before=plain_before,
    )


def change_lines(change: PointChange) -> list[str]:
    """What :func:`choose_point` did, in lines for the CLI and the Review widget."""
    tta = change.key == "operating_point_tta"
    what = "operating point for test-time augmentation" if tta else "operating point"
    lines = [
        f"{what} chosen on {counted(change.images, 'image')}: {change.after.describe()}"
        + (KEPT_PLAIN if change.kept_plain else ""),
        f"before: {change.before.describe() if change.before is not None else 'none'}",
    ]
    if change.plain_before is not None and change.plain is not None:
        same = change.plain.describe(scores=False) == change.plain_before.describe(scores=False)
        lines.append("plain operating point chosen again on the same images, so that the two "
                     "compare: " + (f"the same, {change.plain.describe()}" if same else
                                    f"{change.plain.describe()} (before: "
                                    f"{change.plain_before.describe()})"))  # fmt: skip
    if change.dropped_tta:
        lines.append("the point for test-time augmentation was chosen against the old point "
                     "and is dropped: choose it again with --tta")  # fmt: skip
    if tta and change.plain is not None:
        pays = tta_pays(change.plain, change.after)
        lines.append(f"predict {'uses' if pays else 'does not use'} --tta by default: "
                     f"{tta_gain_text(change.plain, change.after)}"
                     + ("" if pays else f" (it needs a gain of {TTA_GAIN:g} or more, on "
                        f"{AGAINST_REGIONS} regions or more)"))  # fmt: skip
    lines.append(f"written to {change.path}")
    return lines
