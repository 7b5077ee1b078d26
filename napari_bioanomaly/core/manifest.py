"""The record an interrupted prediction leaves beside its output, to resume from.

``predict`` (CLI) keeps it up to date after every image and removes it when the run ends;
Review's "Predict & review" writes it when stopped and resumes from it the next time it
predicts with the same model. It names the run (:func:`run_identity`: the model files, by
path and content, and whether the maps were averaged over flips and rotations) and holds
the finished images' predictions as VIA entries, so that a resumed run takes them as they
were predicted, whatever was done to the output file since.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .fileio import file_digest
from .jsonio import read_json, write_json
from .model import BioAnomalyError, ImageRecord


class OtherRun(BioAnomalyError):
    """The manifest was left by a run of another model, settings or shard."""


def manifest_path(out: str | Path) -> Path:
    """The manifest of the predictions file ``out``: ``<out>.manifest.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def run_identity(models: Sequence[str | Path], tta: bool, heatmaps: bool = False) -> str:
    """What a prediction's results depend on, in words: each model file's absolute path
    and digest, test-time augmentation, and whether anomaly maps were written."""
    # a model retrained (or given a new operating point) under the same name is another one
    text = " + ".join(f"{Path(m).resolve()} (sha256 {(file_digest(m) or 'missing')[:16]})"
                      for m in models)  # fmt: skip
    return text + (" (tta)" if tta else "") + (" (heatmaps)" if heatmaps else "")


class Manifest:
    """The manifest of the predictions file ``out`` for run ``run`` (see
    :func:`run_identity`) of the shard ``shard``."""

    def __init__(self, out: str | Path, run: str, shard: str = "0/1") -> None:
        self.path = manifest_path(out)
        self.run = run
        self.shard = shard
        #: VIA entries of the finished images, by VIA key
        self.entries: dict[str, dict] = {}

    def read(self) -> dict[str, ImageRecord]:
        """The images finished by an interrupted run of this one, by file name (they are
        kept for the next :meth:`save`); empty without a manifest. Raises :class:`OtherRun`
        for the manifest of another run, :class:`~.model.FormatError` for a broken one."""
        from .via import read_via

        if not self.path.is_file():
            return {}
        data = read_json(self.path)
        if not isinstance(data, dict) or not isinstance(data.get("done") or {}, dict):
            raise BioAnomalyError(f"{self.path}: not a prediction manifest; delete it to start "
                                  "over")  # fmt: skip
        if data.get("model") != self.run or data.get("shard") != self.shard:
            raise OtherRun(
                f"{self.path}: manifest of another run ({data.get('model')}, shard "
                f"{data.get('shard')}); delete it to start over"
            )
        if not data.get("done"):
            return {}
        done, _ = read_via(data["done"], str(self.path))
        records = {im.filename: im for im in done.images}
        self.add(*records.values())
        return records

    def add(self, *records: ImageRecord) -> None:
        """Count ``records`` as finished (written by the next :meth:`save`)."""
        from .via import image_entry

        for rec in records:
            self.entries[f"{rec.filename}{rec.size}"] = image_entry(rec, "class")

    def save(self) -> Path:
        """Write the manifest (atomically)."""
        return write_json(self.path, {"model": self.run, "shard": self.shard,
                                      "done": self.entries})  # fmt: skip

    def remove(self) -> None:
        """Remove the manifest and its backup (the run it recorded has ended)."""
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".bak").unlink(missing_ok=True)
