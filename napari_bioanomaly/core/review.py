"""Reviewing predictions against ground truth: the state and the rules, without a GUI.

A :class:`ReviewSession` holds an open ground-truth :class:`AnnotationSession`, the
predictions for its images (a VIA file), the thresholds, and one
:class:`~.evaluate.ImageCache` per image under review, so that a threshold change
rescores every image without rasterising again. Corrections go through it:

- **accept** copies predictions into the ground truth (source ``model-accepted``). They
  stay in the predictions file: they are what the model predicted, and against the
  ground truth that now holds them they count as found (true positives), as ``evaluate``
  counts them on the two files. (Until 2026-12-06 they left the predictions, and every
  accepted prediction turned into a miss of the model.)
- **reject** removes predictions (saved at once).
- **propose** replaces an image's predictions by the outlines of its anomaly map.

Reject and propose rewrite the predictions file as a VIA export, so they are refused
(:attr:`ReviewSession.read_only` says why) where that would lose anything: a file that
holds regions a person drew or accepted (the two fields swapped, or another annotator's
file compared with the ground truth: each rejection deleted an annotation from it until
2026-12-07), or a file of another kind (a VIA project, COCO, GeoJSON, a Fiji ROI set).
Such predictions are reviewed and accepted from as any others.

The Review widget shows a ReviewSession; ``bioanomaly evaluate`` and the widget's
tables share :func:`~.evaluate.report`, so both compute the same figures, and
:func:`~.evaluate.paired`, so both score the same predictions of each image: those of the
same name, else of the name without its folder (predictions of ``images/`` name
``003.png`` what the ground truth calls ``images/003.png``). Until 2026-12-07 Review took
the same name only: such predictions were drawn nowhere and scored as none, and it said
nothing of images without predictions (it says what ``evaluate`` says now,
:meth:`ReviewSession.pairing_notes`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import annotations as annotation_files
from .evaluate import (
    ImageCache,
    ImageScore,
    Report,
    group_summaries,
    paired,
    pairing_notes,
    report,
    summarise,
)
from .fileio import DiskChanged, atomic_write, file_digest, replace_if_unchanged
from .images import image_shape
from .maps import read_heatmap, regions_from_probabilities
from .model import BioAnomalyError, Dataset, ImageRecord, Region
from .paths import resolve_image
from .quality import QC_ATTRIBUTE
from .runs import Spans, iou_matrix
from .session import AnnotationSession
from .text import counted
from .via import encode_cached, encode_entries, to_via_export

#: Columns of the per-image table (the widget's and the exported CSV's).
COLUMNS = ["image", "group", "GT", "pred", "TP", "FP", "FN", "precision", "recall", "F1",
           "pixel IoU", "mean IoU", "score", "QC"]  # fmt: skip
#: Anomaly maps kept in memory (each about 4.5 MB for a 1080 px image).
HEATMAP_CACHE = 8


def cell(row: ImageScore, column: int, qc: Mapping[str, str]) -> Any:
    """The value of a per-image table cell (:data:`COLUMNS`); a mean IoU that is not
    defined (nothing matched) is ``None``, an empty cell in the CSV as in ``evaluate
    --csv`` (a -1 there pulled a spreadsheet's mean down)."""
    if column == len(COLUMNS) - 1:
        return qc.get(row.image, "")
    return [
        row.image, ", ".join(row.group.values()), row.n_gt, row.n_pred, row.tp, row.fp,
        row.fn, row.precision, row.recall, row.f1, row.pixel_iou,
        row.mean_iou, row.score,
    ][column]  # fmt: skip


def beside(source: str | Path, name: str) -> Path:
    """Where a file the widgets write for a dataset goes: inside the folder when
    ``source`` is a folder of images, beside the annotation file otherwise (a model of a
    folder went into its parent, beside other datasets' models)."""
    source = Path(source)
    return source / name if source.is_dir() else source.with_name(name)


def predictions_path(gt: str | Path) -> Path:
    """Where reviewed predictions are kept: ``<annotations>.predictions.json`` beside the
    ground truth (inside the folder when the ground truth is a folder of images)."""
    gt = Path(gt)
    if gt.is_dir():
        return gt / ("annotations" + annotation_files.PREDICTIONS_SUFFIX)
    return gt.with_name(gt.stem + annotation_files.PREDICTIONS_SUFFIX)


def _refuse_ground_truth_as_predictions(gt: AnnotationSession, path: Path) -> None:
    """Refuse the ground truth's own file (or the import it holds the edits of) chosen as
    the predictions: every prediction would be a region of it, and a rejection would
    delete that annotation from it (rewritten as a VIA export, its classes and settings
    gone)."""
    try:
        same = path.is_file() and gt.path.is_file() and os.path.samefile(path, gt.path)
        edits = path.is_file() and annotation_files.saved_edits(path) is not None and (
            os.path.samefile(annotation_files.saved_edits(path) or path, gt.path))  # fmt: skip
    except (OSError, BioAnomalyError):
        return  # opening it says what is wrong
    if same or edits:
        raise BioAnomalyError(
            f"{path}: the ground truth's own annotations, chosen as the predictions (a "
            "rejection would delete annotations from it): choose the predictions file, "
            "e.g. the output of predict or Predict & review"
        )


def _refuse_swapped(gt: AnnotationSession, path: Path, predictions: Dataset) -> None:
    """Refuse the two fields swapped: a ground truth holding only a model's predictions,
    and predictions holding a person's regions (accepting wrote a person's regions into
    the predictions, made a VIA project). A ground truth of a model's regions alone is
    fine otherwise (predict's output corrected in Annotate, a COCO file with scores)."""
    regions = list(gt.dataset.regions)
    swapped = bool(regions) and all(r.source == "model" for r in regions)
    if swapped and any(_drawn(r) for r in predictions.regions):
        raise BioAnomalyError(
            f"{gt.path}: holds only a model's predictions ({counted(len(regions), 'region')}, "
            "source 'model'), chosen as the ground truth (accepting would write annotations "
            f"into it), and {path.name}, a person's regions, as the predictions: the two "
            "fields swapped?"
        )


def _drawn(region: Region) -> bool:
    """Whether a region was drawn or accepted by a person (a model's, predicted by this
    plugin or another tool, has source ``model`` or a score)."""
    return region.source == "model-accepted" or (region.source == "human" and region.score is None)


def read_only_reason(path: Path, predictions: Dataset) -> str | None:
    """Why corrections of the predictions read from ``path`` cannot be written there
    (None: they can). A correction rewrites the file as a VIA export, as predict writes it:
    that would delete the regions a person drew or accepted in it (another annotator's
    file), or turn a file of another kind into one (a VIA project's settings, COCO's ids,
    ... gone)."""
    drawn = sum(1 for r in predictions.regions if _drawn(r))
    if drawn:
        return (
            f"{path.name} holds {counted(drawn, 'region')} drawn or accepted by a person (or "
            "predicted by a tool that gives no score nor source): reviewed read-only "
            "(rejecting would delete them from it; accepting into the ground truth works). "
            "If a model made them, correct a copy that says so: napari-bioanomaly convert "
            f"{path} --to via <copy>.json --as-predictions"
        )
    if path.suffix.lower() in (".zip", ".roi"):
        what = "is a Fiji ROI set, not a VIA export as predict writes"
    else:
        try:
            fmt = annotation_files.json_format(path)
            edits = annotation_files.saved_edits(path)
        except (BioAnomalyError, OSError):
            fmt, edits = None, None
        if edits is not None:
            what = f"is an import whose edits are {edits.name}, not a VIA export as predict writes"
        elif fmt == "via2-export":  # what predict writes, and a correction writes back
            return None
        else:
            kind = {
                "via1-export": "a VIA 1 export",
                "via2-project": "a VIA 2 project",
                "via3-project": "a VIA 3 project",
                "coco": "COCO",
            }.get(fmt or "", "GeoJSON")
            what = f"is {kind}, not a VIA export as predict writes"
    return (
        f"{path.name} {what}: reviewed read-only (rejecting or proposing would rewrite it as "
        "one; accepting into the ground truth works). To correct its predictions, review a "
        f"copy: napari-bioanomaly convert {path} --to via <copy>.json"
    )


def _scored_as(im: ImageRecord, keys: Sequence[str]) -> tuple[list[Region], list[str], list[str]]:
    """What an image's score depends on of its ground truth (its size apart): its regions
    (held, so that none is freed and its ``id`` taken by another), their classes, and its
    group."""
    regions = list(im.regions)
    return regions, [r.label for r in regions], [str(im.file_attributes.get(k, "")) for k in keys]


def _same_scoring(
    seen: tuple[list[Region], list[str], list[str]] | None, im: ImageRecord, keys: Sequence[str]
) -> bool:
    """Whether ``im`` scores as it did when :func:`_scored_as` gave ``seen``."""
    if seen is None:
        return False
    regions, labels, group = _scored_as(im, keys)
    same = len(regions) == len(seen[0]) and all(
        a is b for a, b in zip(regions, seen[0], strict=True)
    )
    return same and labels == seen[1] and group == seen[2]


class ReviewSession:
    """Predictions under review against an open ground truth.

    Parameters
    ----------
    gt
        The ground truth (shared with the Annotate widget when it has the file open).
    predictions, path
        The predictions and the VIA file they are saved to.
    images
        File names to review (e.g. the validation images); default: every image.
    """

    def __init__(
        self,
        gt: AnnotationSession,
        predictions: Dataset,
        path: str | Path,
        images: Sequence[str] | None = None,
        score: bool = True,
    ) -> None:
        self.gt = gt
        self.predictions = predictions
        self.path = Path(path)
        self.heatmaps = self.path.with_suffix(annotation_files.HEATMAPS_SUFFIX)
        self.iou_threshold = 0.5
        #: predictions the last :meth:`accept` found matched already (true positives)
        self.confirmed = 0
        #: predictions the last :meth:`accept` did not add although they match nothing:
        #: the ground truth has their region already (see :meth:`accept`)
        self.kept_out = 0
        #: predictions the last :meth:`accept` did not add because they cover no pixel
        self.empty = 0
        self.score_threshold = 0.0  # as evaluate: every prediction counts
        keys = [k for im in gt.dataset.images for k in im.file_attributes if k != QC_ATTRIBUTE]
        #: the file attribute whose values group the images (the first one the images have)
        self.group_by: str | None = keys[0] if keys else None
        wanted = set(images) if images is not None else None
        #: the images under review, in dataset order
        self.names = [
            im.filename for im in gt.dataset.images if wanted is None or im.filename in wanted
        ]
        self.caches: dict[str, ImageCache] = {}
        self._heat: dict[str, np.ndarray] = {}
        #: file name -> position, per list of images (see _position)
        self._positions: dict[int, dict[str, int]] = {}
        #: ground-truth file name -> the name of its predictions (see _pairs), and the
        #: lists (and their lengths) it was paired for
        self._paired: dict[str, str] = {}
        self._paired_for: tuple[list[ImageRecord], int, list[ImageRecord], int] | None = None
        #: empty predictions of the images the predictions file has none for: kept apart
        #: (see prediction), as evaluate scores such an image
        self._unpredicted: dict[str, ImageRecord] = {}
        #: :meth:`pairing_notes`, and the images under review they were said of
        self._notes: tuple[int, list[str]] | None = None
        #: digest of the predictions file as read or written last (see save_predictions);
        #: None: not read from that file (nothing there to be overwritten unseen)
        self._disk: str | None = None
        #: why corrections cannot be written to the predictions file (see
        #: :func:`read_only_reason`; set by :meth:`opening`); None: they can
        self.read_only: str | None = None
        #: the predictions' VIA entries as last written, by file name (see
        #: :func:`~.via.encode_cached`): a correction re-encodes its image only
        self._entries: dict[str, bytes] = {}
        #: :meth:`ground_truth_state` and what it was counted at (see _state_key)
        self._state: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
        #: what :meth:`opening` read aside for :meth:`adopt`: image sizes (or why an image
        #: could not be read) by file name, and the ground truth's state it scored
        self._aside: dict[str, tuple[int, int] | str] = {}
        #: the ground truth's edits and dataset :meth:`opening` scored (held: an id could
        #: be another dataset's once this one is freed)
        self._scored_at: tuple[int, Dataset] | None = None
        #: what :meth:`opening` scored of each image (see _scored_as), for :meth:`adopt`
        self._seen: dict[str, tuple[list[Region], list[str], list[str]]] = {}
        if score:
            for name in self.names:
                self.rescore(name)

    @classmethod
    def open(
        cls, gt: AnnotationSession, path: str | Path, images: Sequence[str] | None = None
    ) -> ReviewSession:
        """Read the predictions at ``path`` (images resolved against the ground truth's)."""
        steps = cls.opening(gt, path, images)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                review: ReviewSession = done.value
                review.adopt()
                return review

    @classmethod
    def opening(
        cls, gt: AnnotationSession, path: str | Path, images: Sequence[str] | None = None
    ) -> Generator[tuple[int, int], None, ReviewSession]:
        """:meth:`open` in steps, for a worker thread (the GUI stays live while thousands
        of images are read and scored): yields ``(images scored, images)`` now and then,
        and returns the review, which :meth:`adopt` then hands the ground truth over to.

        Reads the ground truth but never changes it (its thread may edit it meanwhile):
        the sizes of images it has not read yet are read aside and scored with, and set
        on it by :meth:`adopt`. The predictions' encoding for the first correction is
        made here too (:meth:`save_predictions` then encodes its image only).
        """
        _refuse_ground_truth_as_predictions(gt, Path(path))
        # the ground truth scored: the GUI thread may read the file again meanwhile (a
        # reload, a version restored), replacing the dataset (see ground_truth_replaced)
        edits, dataset = gt.edits, gt.dataset
        by_name = {im.filename: im for im in dataset.images}
        # what a correction may write over (see save_predictions)
        disk = file_digest(path) if Path(path).is_file() else None
        predictions, _ = annotation_files.load(path, dataset.root, read_images=False)
        _refuse_swapped(gt, Path(path), predictions)
        review = cls(gt, predictions, path, images, score=False)
        review._disk = disk
        review.read_only = read_only_reason(Path(path), predictions)
        review._scored_at = edits, dataset
        root = dataset.root or gt.path.parent
        keys = [review.group_by] if review.group_by else []
        for k, name in enumerate(review.names):
            im = by_name.get(name)
            if im is None:  # the names are of a dataset read again since: to be opened again
                break
            # what is scored, taken once: the GUI thread may replace the list meanwhile
            seen = dataclasses.replace(im, regions=list(im.regions))
            if seen.shape is None:
                try:
                    shape = image_shape(resolve_image(root, im.filename))
                except BioAnomalyError as exc:
                    review._aside[name] = str(exc)  # scored as the session scores it
                else:
                    review._aside[name] = seen.shape = shape
            review._seen[name] = _scored_as(seen, keys)
            review.caches[name] = ImageCache(seen, review.prediction(name), keys)
            if k % 50 == 0:
                yield k, len(review.names)
        if review.read_only is None:  # the first correction as fast as the next ones
            encode_entries(review.predictions, review._entries)
        yield len(review.names), len(review.names)
        return review

    def ground_truth_replaced(self) -> bool:
        """After :meth:`opening`: whether the ground truth's file was read again meanwhile
        (theirs reloaded, an earlier version restored). What was scored is then of another
        dataset: open again in the background rather than :meth:`adopt`, which scores
        every image again on its thread."""
        return self._scored_at is not None and self._scored_at[1] is not self.gt.dataset

    def adopt(self) -> None:
        """After :meth:`opening`, on the thread that edits the ground truth: the image
        sizes read aside are set on it (regions past the edges of an image smaller than
        recorded are clipped, and that image scored again), and the images edited
        meanwhile are scored again (every image, where the file was read again)."""
        edits = self.gt.edits  # set_shape counts the clipping it does as an edit
        for name, shape in self._aside.items():
            if name not in self.caches:
                continue
            index = self._gt_position(name)
            if isinstance(shape, str):
                self.gt.problems[name] = shape
                continue
            before = [id(r) for r in self.gt.dataset.images[index].regions]
            self.gt.set_shape(index, shape)
            if [id(r) for r in self.gt.dataset.images[index].regions] != before:
                self.rescore(name)
        self._aside.clear()
        if self.ground_truth_replaced():
            self.ground_truth_reloaded()
        elif self._scored_at is not None and self._scored_at[0] != edits:
            keys = [self.group_by] if self.group_by else []
            for name in self.names:
                if not _same_scoring(self._seen.get(name), self.ground_truth(name), keys):
                    self.rescore(name)
        self._seen.clear()
        self._scored_at = None

    # ------------------------------------------------------------------ records

    def _position(self, images: list[ImageRecord], filename: str) -> int | None:
        """Where ``filename`` is in ``images`` (the ground truth's or the predictions'),
        from a map of positions rebuilt whenever it is found out of date."""
        positions = self._positions.setdefault(id(images), {})
        i = positions.get(filename)
        if i is None or i >= len(images) or images[i].filename != filename:
            positions.clear()
            positions.update((im.filename, k) for k, im in enumerate(images))
            i = positions.get(filename)
        return i

    def _gt_position(self, filename: str) -> int:
        i = self._position(self.gt.dataset.images, filename)
        if i is None:
            raise BioAnomalyError(f"{filename}: not an image of {self.gt.path}")
        return i

    def ground_truth(self, filename: str) -> ImageRecord:
        return self.gt.dataset.images[self._gt_position(filename)]

    def _pairs(self) -> dict[str, str]:
        """Each ground-truth image's predictions, by name: :func:`~.evaluate.paired`, as
        ``evaluate`` pairs the two files (the same name, else the same name without its
        folder where that is one image's on both sides), paired again when either list
        of images changes."""
        gt, pred = self.gt.dataset.images, self.predictions.images
        key, sizes = self._paired_for, (len(gt), len(pred))
        if key is None or key[0] is not gt or key[2] is not pred or (key[1], key[3]) != sizes:
            pairs = paired(self.gt.dataset, self.predictions)
            self._paired = {name: im.filename for name, im in pairs.items()}
            self._paired_for = gt, len(gt), pred, len(pred)
            self._notes = None
        return self._paired

    def predicted_name(self, filename: str) -> str | None:
        """The name the predictions file gives the ground-truth image ``filename`` (its
        own, or its name without its folder); None when it has no predictions of it."""
        return self._pairs().get(filename)

    def prediction(self, filename: str) -> ImageRecord:
        """The predictions of a ground-truth image: the predictions file's record paired
        with it (see :meth:`_pairs`), edited in place and saved under its own name; an
        image without gets an empty record kept apart, not put in the file (it would
        say the model predicted nothing there, where it was never run)."""
        name = self.predicted_name(filename)
        if name is not None:
            i = self._position(self.predictions.images, name)
            if i is not None:
                return self.predictions.images[i]
        if filename not in self._unpredicted:
            self._unpredicted[filename] = ImageRecord(filename)
        return self._unpredicted[filename]

    def _predicted(self, filename: str) -> ImageRecord:
        """:meth:`prediction`, put in the predictions file where it is not (regions are
        written into it: the image has predictions now)."""
        record = self.prediction(filename)
        if self._unpredicted.get(filename) is record:
            del self._unpredicted[filename]
            self.predictions.images.append(record)
        return record

    def pairing_notes(self) -> list[str]:
        """What ``evaluate`` says of the two files' images, of the images under review
        (:func:`~.evaluate.pairing_notes`): ground-truth images without predictions
        (scored as predicting nothing), predictions of images not in the ground truth
        or whose name without its folder is several images' (left out), or that none
        pairs at all. Empty when each image under review has predictions and each
        prediction an image."""
        names = self._pairs()
        if self._notes is None or self._notes[0] != len(self.names):
            pairs = {gt: ImageRecord(pred) for gt, pred in names.items()}
            notes = pairing_notes(self.gt.dataset, self.predictions, pairs, self.gt.path,
                                  self.path, self.names)  # fmt: skip
            self._notes = len(self.names), notes
        return list(self._notes[1])

    def unpaired_predictions(self) -> list[str]:
        """Names of the predicted images paired with no ground-truth image (sorted), as
        ``evaluate`` lists them (its report's ``unmatched_predictions``)."""
        used = set(self._pairs().values())
        return sorted({im.filename for im in self.predictions.images} - used)

    def rescore(self, filename: str) -> None:
        """Score an image again after its ground truth or predictions changed."""
        index = self._gt_position(filename)
        gt = self.gt.dataset.images[index]
        if gt.shape is None:  # sizes are read lazily by the session; scoring needs them
            try:
                self.gt.read_shape(index)
            except BioAnomalyError:
                pass
        keys = [self.group_by] if self.group_by else []
        self.caches[filename] = ImageCache(gt, self.prediction(filename), keys)

    def relabel(self) -> int:
        """After a class of the ground truth was renamed (its regions' labels changed in
        place, their outlines did not): each image scored takes its regions' labels again,
        nothing rasterised again (thousands of images). An image whose regions changed
        otherwise meanwhile is scored again. Returns how many images changed."""
        changed = 0
        for name, cache in self.caches.items():
            regions = self.ground_truth(name).regions
            if len(regions) != cache.n_gt:
                self.rescore(name)
                changed += 1
                continue
            labels = [regions[i].label for i in cache.gt_index]
            if labels != cache.gt_labels:
                cache.gt_labels = labels
                changed += 1
        return changed

    def ground_truth_reloaded(self) -> None:
        """The ground truth's file was read again (theirs reloaded, an earlier version
        restored): images it no longer has leave the review, every other is scored again."""
        present = {im.filename for im in self.gt.dataset.images}
        self.names = [n for n in self.names if n in present]
        self.caches = {n: c for n, c in self.caches.items() if n in present}
        self._state = None
        self._paired_for = None  # its images may have other names: paired again
        for name in self.names:
            self.rescore(name)

    def shown(self, filename: str) -> list[int]:
        """Indices of the image's predictions at or above the score threshold."""
        return [
            i
            for i, r in enumerate(self.prediction(filename).regions)
            if r.score is None or r.score >= self.score_threshold
        ]

    # ------------------------------------------------------------------ scores

    def rows(self) -> list[ImageScore]:
        """Per-image scores at the current thresholds (cheap: IoUs are cached)."""
        return [self.caches[n].score(self.iou_threshold, self.score_threshold) for n in self.names]

    def summaries(self) -> tuple[list[ImageScore], dict[str, Any], dict[str, Any]]:
        """The rows, the summary and the summary per group at the current thresholds:
        what a slider move needs (cheaper than :meth:`report`, no per-class matching)."""
        rows = self.rows()
        return rows, summarise(rows), group_summaries(rows, self.group_by)

    def _state_key(self) -> tuple[int, int, int]:
        """What :meth:`ground_truth_state` depends on: the ground truth's edits (every
        change of a region or a flag counts one, a reload too), which dataset it is, and
        the images under review."""
        return self.gt.edits, id(self.gt.dataset), len(self.names)

    def ground_truth_state(self) -> tuple[int, int, int]:
        """Of the images under review: how many have ground-truth regions, how many were
        checked and have none (marked "checked: no anomaly", or reviewed), and how many
        neither (never annotated nor checked).

        Counted once per change of the ground truth, not at each refresh of the Review
        widget (which asks several times per slider step): a walk over thousands of
        images otherwise.
        """
        key = self._state_key()
        if self._state is None or self._state[0] != key:
            self._state = key, self._count_state()
        return self._state[1]

    def _count_state(self) -> tuple[int, int, int]:
        """:meth:`ground_truth_state`, counted."""
        annotated = checked = 0
        for name in self.names:
            im = self.ground_truth(name)
            if im.regions:
                annotated += 1
            elif im.no_anomaly or im.reviewed:
                checked += 1
        return annotated, checked, len(self.names) - annotated - checked

    @property
    def scored(self) -> bool:
        """Whether there is ground truth to score the predictions against: an image under
        review has a region, or was checked. Otherwise (a new folder of images, an
        unsupervised model) every prediction would count as a false positive and the
        model score 0: they are proposals to accept or reject, not errors."""
        annotated, checked, _ = self.ground_truth_state()
        return bool(annotated or checked)

    def scoring_note(self) -> str:
        """What the scores stand on, where that is not plain (empty otherwise): nothing
        annotated yet (:attr:`scored` false), or images neither annotated nor checked,
        which are scored as without anomaly, as ``evaluate`` scores them."""
        annotated, checked, unknown = self.ground_truth_state()
        n = len(self.names)
        if not annotated and not checked:
            return (
                f"No anomaly annotated yet: the {counted(self.n_predictions(), 'prediction')} "
                f"on {counted(n, 'image')} are proposals to accept or reject, not scored."
            )
        if unknown:
            return (
                f"{unknown} of {counted(n, 'image')} neither annotated nor checked: scored as "
                "without anomaly (their predictions count as false positives); mark the "
                "normal ones checked or reviewed"
            )
        return ""

    def n_predictions(self) -> int:
        """Predictions of the images under review at or above the score threshold."""
        return sum(len(self.shown(name)) for name in self.names)

    def report(self, image_threshold: float = 0.5) -> Report:
        """Summary, groups, classes, class agreement and image level at the thresholds:
        what ``bioanomaly evaluate`` reports for the same files."""
        caches = [self.caches[n] for n in self.names]
        return report(caches, self.rows(), self.iou_threshold, self.score_threshold,
                      self.group_by, image_threshold=image_threshold,
                      unmatched_predictions=self.unpaired_predictions())  # fmt: skip

    def errors(self, filename: str) -> tuple[list[Region], list[Region]]:
        """The image's false negatives (ground truth) and false positives (predictions)."""
        if filename not in self.caches:
            return [], []
        fn, fp = self.caches[filename].unmatched(self.iou_threshold, self.score_threshold)
        gt, pred = self.ground_truth(filename), self.prediction(filename)
        return [gt.regions[i] for i in fn], [pred.regions[i] for i in fp]

    def qc_flags(self) -> dict[str, str]:
        return {
            im.filename: str(im.file_attributes.get(QC_ATTRIBUTE, ""))
            for im in self.gt.dataset.images
        }

    def table_csv(self, path: str | Path) -> Path:
        """Write the per-image table (:data:`COLUMNS`, at the current thresholds) as CSV,
        atomically.

        Raises
        ------
        WriteError
            When it cannot be written (a read-only folder, a full disk): one line naming
            ``path``, not the temporary file beside it, from :func:`~.fileio.atomic_write`
            (a :class:`BioAnomalyError` and an :class:`OSError`).
        BioAnomalyError
            When ``path`` is a folder.
        """
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        qc = self.qc_flags()
        for row in self.rows():
            writer.writerow([cell(row, c, qc) for c in range(len(COLUMNS))])
        return atomic_write(path, buf.getvalue().encode("utf-8"))

    # ------------------------------------------------------------------ corrections

    def picked(
        self,
        filename: str,
        indices: Sequence[int],
        polygons: Sequence[np.ndarray] | None = None,
    ) -> tuple[list[int], list[Region]]:
        """The shown predictions at ``indices`` (positions in :meth:`shown`): their
        positions in the image's predictions, and copies outlined by ``polygons`` where
        given (the user may move vertices before accepting)."""
        shown = self.shown(filename)
        order = [i for i in sorted(set(indices)) if 0 <= i < len(shown)]
        pred = self.prediction(filename)
        copies = []
        for i in order:
            r = pred.regions[shown[i]]
            polygon = r.polygon
            if polygons is not None and i < len(polygons):  # edited
                polygon = np.asarray(polygons[i], float)
            copies.append(Region(polygon, r.label, dict(r.attributes), r.score, "model", r.shape))
        return [shown[i] for i in order], copies

    def accept(
        self,
        filename: str,
        indices: Sequence[int],
        polygons: Sequence[np.ndarray] | None = None,
        add: Callable[[list[Region]], None] | None = None,
    ) -> list[Region]:
        """Copy shown predictions into the ground truth (source ``model-accepted``).

        The predictions stay in their file (see the module docstring): accepted, each
        one is a region the model found. Only what makes a prediction found is added,
        never a second copy of a region (see :meth:`_sort_accepted`): :attr:`confirmed`
        counts those matched already (true positives: nothing to add), :attr:`kept_out`
        those not added because the ground truth has their region (they stay false
        positives, as the table says). ``add`` puts the regions into the ground truth (the
        widget's annotator, which also shows and autosaves them); by default they are
        added to the session and it is saved."""
        positions, taken = self.picked(filename, indices, polygons)
        self.confirmed = self.kept_out = self.empty = 0
        if not taken:
            return []
        found, kept_out, empty = self._sort_accepted(filename, positions, taken)
        self.confirmed, self.kept_out = int(found.sum()), int(kept_out.sum())
        self.empty = int(empty.sum())
        taken = [r for r, n in zip(taken, found | kept_out | empty, strict=True) if not n]
        if not taken:  # nothing changes
            return []
        accepted = [
            Region(r.polygon, r.label, dict(r.attributes), r.score, "model-accepted", r.shape)
            for r in taken
        ]
        if add is None:
            index = self._gt_position(filename)
            self.gt.set_regions(list(self.gt.dataset.images[index].regions) + accepted, index)
            self.gt.save()
        else:
            add(accepted)
        self.rescore(filename)
        return accepted

    def _sort_accepted(
        self, filename: str, positions: Sequence[int], taken: Sequence[Region]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Of predictions being accepted (at ``positions`` in the image's predictions, as
        ``taken``: the outlines accepted): which are found already, which are kept out,
        and which cover no pixel; the others are added.

        Not added, as that would put a region in the ground truth twice: an outline that
        overlaps a ground-truth region at the IoU threshold, or one added before in this
        call; or one accepted before (its outline edited below the threshold since): a
        model-accepted region of its score over it that no prediction matches, each such
        region standing for one prediction only (unscored predictions all have the same
        score: two overlapping ones accepted one after the other made the second "found"
        by the first one's copy, and it was never added); or one of no pixel (outside
        the image, a sliver: left out of the scores, a false positive of none). Of the
        others, found are the matched ones (one to one at the review's thresholds, as the
        table and ``evaluate`` count them), kept out the rest (false positives still).
        """
        gt = self.ground_truth(filename)
        shape, truth = gt.shape, gt.regions
        cache = self.caches.get(filename) or ImageCache(gt, self.prediction(filename))
        rows, matched = cache.matched(self.iou_threshold, self.score_threshold)
        iou = iou_matrix(Spans.of([*truth, *taken], shape), Spans.of(taken, shape))
        empty = Spans.of(taken, shape).areas() == 0
        not_added = empty.copy()
        copies = [t for t, r in enumerate(truth) if r.source == "model-accepted" and t not in rows]
        for k in np.flatnonzero(~not_added).tolist():
            added = len(truth) + np.flatnonzero(~not_added[:k])
            mine = [t for t in copies if iou[t, k] > 0 and truth[t].score == taken[k].score]
            if (iou[: len(truth), k] >= self.iou_threshold).any() or (
                iou[added, k] >= self.iou_threshold
            ).any():
                not_added[k] = True
            elif mine:
                copies.remove(max(mine, key=lambda t: iou[t, k]))
                not_added[k] = True
        found = np.isin(np.asarray(positions), matched) & ~empty
        return found & not_added, ~found & not_added & ~empty, empty

    def reject(self, filename: str, indices: Sequence[int]) -> int:
        """Remove shown predictions; the predictions file is saved at once."""
        drop, _ = self.picked(filename, indices)
        if drop:
            self.check_writable()
            gone = set(drop)
            kept = [r for i, r in enumerate(self.prediction(filename).regions) if i not in gone]
            self._replace_predictions(filename, kept)
        return len(drop)

    def propose(
        self, filename: str, threshold: float, min_area: float, min_peak: float | None = None
    ) -> list[Region] | None:
        """Replace the image's predictions by the outlines of its anomaly map above
        ``threshold`` (regions of at least ``min_area`` px, and with ``min_peak`` whose map
        exceeds it somewhere); None without a map."""
        heat = self.heatmap(filename)
        if heat is None:
            return None
        self.check_writable()
        regions = regions_from_probabilities(
            np.stack([1.0 - heat, heat]), ["anomaly"], threshold, min_area, min_peak=min_peak
        )
        self._replace_predictions(filename, regions)
        return regions

    def _replace_predictions(self, filename: str, regions: list[Region]) -> None:
        """Give the image these predictions and save the file; where it cannot be written,
        nothing changed (the image's record as it was, out of the file again where it had
        none: the next pick counts as shown)."""
        unpredicted = filename in self._unpredicted
        record = self._predicted(filename)
        before, record.regions = record.regions, regions
        try:
            self.save_predictions(record.filename)
        except BaseException:  # not written: not done
            record.regions = before
            self._entries.pop(record.filename, None)
            if unpredicted:
                self.predictions.images.remove(record)
                self._unpredicted[filename] = record
            raise
        self.rescore(filename)

    def predictions_changed(self) -> bool:
        """Whether the predictions file changed on disk since it was read or written here
        (see :meth:`check_predictions_file`)."""
        return (file_digest(self.path) if self.path.is_file() else None) != self._disk

    def check_writable(self) -> None:
        """Raise where a correction cannot be written to the predictions file: read-only
        (:attr:`read_only`), or changed on disk (:meth:`check_predictions_file`)."""
        if self.read_only is not None:
            raise BioAnomalyError(self.read_only)
        self.check_predictions_file()

    def check_predictions_file(self) -> None:
        """Raise :class:`~.fileio.DiskChanged` where the predictions file changed on disk
        since it was read or written here (a new ``predict`` run over it, most often):
        a correction saved then would write the old predictions over the new ones."""
        if self._disk is not None and file_digest(self.path) != self._disk:
            raise DiskChanged(
                f"{self.path}: changed on disk since the review read it (predictions "
                "written again?); nothing changed: open the review again to see them"
            )

    def save_predictions(self, changed: str | None = None) -> None:
        """Write the predictions (a VIA 2 export; the file before kept as ``.bak``), never
        over a file changed since it was read (:meth:`check_predictions_file`).

        ``changed``: the file name of the only image whose predictions changed since the
        last write (the others are not encoded again); None: every image."""
        if self.read_only is not None:
            raise BioAnomalyError(self.read_only)
        if changed is None:
            self._entries.clear()
        else:
            self._entries.pop(changed, None)
        ds = self.predictions
        raw = encode_cached(lambda entries: to_via_export(ds, entries), ds, self._entries)
        try:
            self._disk = replace_if_unchanged(self.path, raw, self._disk,
                                              force=self._disk is None)  # fmt: skip
        except DiskChanged:
            self.check_predictions_file()  # said as above
            raise

    # ------------------------------------------------------------------ maps

    def heatmap(self, filename: str) -> np.ndarray | None:
        """The image's stored anomaly map (see ``predict --heatmaps``), or None.

        Raises
        ------
        BioAnomalyError
            When the map is there but cannot be read (named).
        """
        if filename in self._heat:
            return self._heat[filename]
        # written by predict under the predictions' name of the image (see _pairs)
        heat = read_heatmap(self.heatmaps, self.predicted_name(filename) or filename)
        if heat is not None:
            if len(self._heat) >= HEATMAP_CACHE:
                self._heat.pop(next(iter(self._heat)))
            self._heat[filename] = heat
        return heat
