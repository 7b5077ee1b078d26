"""The record an interrupted prediction leaves beside its output, to resume from.

``predict`` (CLI) keeps it up to date after every image and removes it when the run ends;
Review's "Predict & review" writes it when stopped and resumes from it the next time it
predicts with the same model. It names the run (:func:`run_identity`: the model files, by
path and content, and whether the maps were averaged over flips and rotations) and holds
the finished images' predictions as VIA entries, so that a resumed run takes them as they
were predicted, whatever was done to the output file since.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .fileio import atomic_write, file_digest
from .jsonio import dumps, read_json
from .model import BioAnomalyError, ImageRecord


class OtherRun(BioAnomalyError):
    """The manifest was left by a run of another model, settings or shard."""


def manifest_path(out: str | Path) -> Path:
    """The manifest of the predictions file ``out``: ``<out>.manifest.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def run_identity(
    models: Sequence[str | Path],
    tta: bool,
    heatmaps: bool = False,
    threshold: float | None = None,
    min_area: float | None = None,
    min_peak: float | None = None,
) -> str:
    """What a prediction's results depend on, in words: each model file's absolute path
    and digest, test-time augmentation, whether anomaly maps were written, and the
    operating point's values given in place of the model's (``None``: the model's, which
    its digest stands for). A run resumed with another threshold wrote one file of
    images at two operating points."""
    # a model retrained (or given a new operating point) under the same name is another one
    text = " + ".join(f"{Path(m).resolve()} (sha256 {(file_digest(m) or 'missing')[:16]})"
                      for m in models)  # fmt: skip
    given = [f"{name} {value:g}" for name, value in (("threshold", threshold),
             ("min area", min_area), ("min peak", min_peak)) if value is not None]  # fmt: skip
    return (text + (" (tta)" if tta else "") + (" (heatmaps)" if heatmaps else "")
            + (f" ({', '.join(given)})" if given else ""))  # fmt: skip


#: what the first line of a manifest says it is
FORMAT = "napari-bioanomaly prediction manifest 2"


class Manifest:
    """The manifest of the predictions file ``out`` for run ``run`` (see
    :func:`run_identity`) of the shard ``shard``.

    The file is JSON Lines: a first line naming the run, then one line per finished image
    (its VIA key and entry), appended as each image ends, so that recording an image costs
    the same at the 2,000th image as at the first. A line cut short by a crash is dropped
    on reading (that image is predicted again).
    """

    def __init__(self, out: str | Path, run: str, shard: str = "0/1") -> None:
        self.path = manifest_path(out)
        self.run = run
        self.shard = shard
        #: VIA entries of the finished images, by VIA key
        self.entries: dict[str, dict] = {}
        #: whether the file on disk is this run's, whole, so that lines can be appended
        self._appendable = False

    def _header(self) -> dict[str, str]:
        return {"format": FORMAT, "model": self.run, "shard": self.shard}

    def read(self) -> dict[str, ImageRecord]:
        """The images finished by an interrupted run of this one, by file name (they are
        kept for the next :meth:`save`); empty without a manifest. Raises :class:`OtherRun`
        for the manifest of another run, :class:`~.model.FormatError` for a broken one."""
        from .via import read_via

        if not self.path.is_file():
            return {}
        header, done, torn = self._lines()
        if header.get("model") != self.run or header.get("shard") != self.shard:
            raise OtherRun(
                f"{self.path}: manifest of another run ({header.get('model')}, shard "
                f"{header.get('shard')}); delete it to start over"
            )
        self.entries.update(done)
        # a file of the first format, or whose last line a crash cut short, is written
        # whole by the first append; lines are appended to the others
        self._appendable = header.get("format") == FORMAT and not torn
        if not done:
            return {}
        dataset, _ = read_via(done, str(self.path))
        return {im.filename: im for im in dataset.images}

    def _lines(self) -> tuple[dict[str, Any], dict[str, dict], bool]:
        """The header, the finished images' entries by VIA key, and whether the last
        line was cut short. Reads the first format too (one JSON object, written whole)."""
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            data = read_json(self.path, raw)  # the first format, or nothing we know
            if not isinstance(data, dict) or not isinstance(data.get("done") or {}, dict):
                raise BioAnomalyError(f"{self.path}: not a prediction manifest; delete it to "
                                      "start over")  # fmt: skip
            return data, data.get("done") or {}, False
        done: dict[str, dict] = {}
        body = [line for line in lines[1:] if line.strip()]
        torn = False
        for number, line in enumerate(body, start=2):
            try:
                item = json.loads(line)
                done[str(item["key"])] = dict(item["entry"])
            except (ValueError, KeyError, TypeError):
                if number == len(body) + 1 and not raw.endswith(b"\n"):
                    torn = True  # the last line, cut short by a crash
                    break
                raise BioAnomalyError(
                    f"{self.path}, line {number}: not an image's entry; "
                    "delete the manifest to start over"
                ) from None
        return header, done, torn

    def add(self, *records: ImageRecord) -> None:
        """Count ``records`` as finished (written by the next :meth:`save`)."""
        for key, entry in self._entries(records):
            self.entries[key] = entry

    @staticmethod
    def _entries(records: Sequence[ImageRecord]) -> list[tuple[str, dict]]:
        from .via import image_entry

        return [(f"{rec.filename}{rec.size}", image_entry(rec, "class")) for rec in records]

    def append(self, record: ImageRecord) -> None:
        """Count ``record`` as finished and write it at once: one line appended (and
        synced), or the whole file when it is not yet this run's."""
        ((key, entry),) = self._entries([record])
        self.entries[key] = entry
        if not self._appendable:
            self.save()
            return
        with open(self.path, "ab") as fh:
            fh.write(dumps({"key": key, "entry": entry}) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save(self) -> Path:
        """Write the whole manifest (atomically)."""
        lines = [dumps(self._header())]
        lines += [dumps({"key": key, "entry": entry}) for key, entry in self.entries.items()]
        path = atomic_write(self.path, b"\n".join(lines) + b"\n")
        self._appendable = True
        return path

    def remove(self) -> None:
        """Remove the manifest and its backup (the run it recorded has ended)."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".bak").unlink(missing_ok=True)
