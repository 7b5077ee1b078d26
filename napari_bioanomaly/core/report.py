"""Import reports: what was found in a file, what came in, and what changed on the way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: Kinds of issue an import can report, and what each means.
ISSUE_KINDS = {
    "skipped": "region not imported",
    "repaired": "invalid polygon repaired (shapely make_valid)",
    "split": "region split into several polygons",
    "clipped": "vertices outside the image clipped to its border",
    "closed": "closing vertex (repeat of the first) removed",
    "converted": "shape converted to a polygon",
    "image": "image entry problem",
    "file": "file-level problem",
    "class": "class label problem",
    "changed": "value that could not be saved as read, changed",
    "dropped": "read but not kept (not written back)",
    "note": "for your information (nothing wrong)",
}


#: Kinds from the most serious (data not imported, or changed) to the most benign.
_ORDER = ["skipped", "image", "file", "changed", "dropped", "class", "repaired", "split", "clipped",
          "converted", "closed", "note"]  # fmt: skip


def class_clash(name: str, moved: str, value: Any, label: str | None) -> str:
    """What an import says of a region attribute named like the class attribute ``name``,
    kept as ``moved`` (:func:`~.model.set_apart`); ``label``: the region's class, ``None``
    when its file gave it none."""
    cls = f"the class stays {label!r}" if label is not None else "the region has no class"
    return (
        f"region attribute {name!r} ({value!r:.40}) has the name of the class attribute: "
        f"kept as {moved!r}; {cls}"
    )


@dataclass(frozen=True)
class ImportIssue:
    """One thing the importer skipped, changed, or wants the user to know.

    ``image`` and ``region`` locate the item (``region`` is the index or key it
    had in the file); either may be ``None`` for file-level issues.
    """

    kind: str
    message: str
    file: str = ""
    image: str | None = None
    region: str | None = None

    def __str__(self) -> str:
        where = [self.file] if self.file else []
        if self.image is not None:
            where.append(f"image {self.image!r}")
        if self.region is not None:
            where.append(f"region {self.region}")
        loc = ", ".join(where)
        return f"{loc}: {self.message}" if loc else self.message


@dataclass
class ImportReport:
    """Counts and issues of one import.

    Attributes
    ----------
    format
        Format found: ``via1-export``, ``via2-export``, ``via2-project``,
        ``via3-project``, ``coco``, ...
    version
        Format version string when the file states one.
    regions_found
        Regions in the file, whatever their shape.
    regions_imported
        Regions of the file that became at least one polygon.
    shapes
        Regions found, by their shape name in the file.
    """

    file: str = ""
    format: str = ""
    version: str | None = None
    images: int = 0
    regions_found: int = 0
    regions_imported: int = 0
    shapes: Counter[str] = field(default_factory=Counter)
    issues: list[ImportIssue] = field(default_factory=list)
    #: images (and folders, ending in ``/``) of the folder listed that are links leading
    #: outside it: left out, each also an ``image`` issue (see
    #: :func:`~.annotations.outside_links_note`)
    outside_links: list[str] = field(default_factory=list)

    def merge(self, other: ImportReport) -> None:
        """Add the counts and issues of another import (one file of a folder) to these."""
        self.images += other.images
        self.regions_found += other.regions_found
        self.regions_imported += other.regions_imported
        self.shapes.update(other.shapes)
        self.issues.extend(other.issues)
        self.outside_links.extend(other.outside_links)

    def add(
        self,
        kind: str,
        message: str,
        image: str | None = None,
        region: Any = None,
        file: str | None = None,
    ) -> None:
        """Record an issue of ``kind`` (one of :data:`ISSUE_KINDS`); ``file``: the file it
        is in when not this report's own (one file of a folder)."""
        if kind not in ISSUE_KINDS:
            raise ValueError(f"unknown issue kind {kind!r}")
        where = self.file if file is None else file
        self.issues.append(
            ImportIssue(kind, message, where, image, None if region is None else str(region))
        )

    def counts(self) -> Counter[str]:
        """Number of issues of each kind."""
        return Counter(i.kind for i in self.issues)

    @property
    def warnings(self) -> list[str]:
        """Every issue as one readable line."""
        return [f"[{i.kind}] {i}" for i in self.issues]

    def summary(self, first: int = 5) -> list[str]:
        """The issues grouped by kind, most serious kinds first: a heading with the count
        of each kind, then its first ``first`` issues (all with ``first=0``) and how many
        more there are. 181 lossless "closing vertex removed" lines no longer bury the
        five repairs of a file."""
        groups: dict[str, list[ImportIssue]] = {}
        for issue in self.issues:
            groups.setdefault(issue.kind, []).append(issue)
        lines = []
        for kind in sorted(groups, key=lambda k: (_ORDER.index(k), k)):
            items = groups[kind]
            lines.append(f"[{kind}] {len(items)} x {ISSUE_KINDS[kind]}")
            shown = items if first <= 0 else items[:first]
            lines.extend(f"    {i}" for i in shown)
            if len(items) > len(shown):
                lines.append(f"    ... and {len(items) - len(shown)} more (--verbose lists all)")
        return lines

    def to_dict(self, classes: dict[str, int] | None = None) -> dict[str, Any]:
        """A JSON-ready summary (the ``inspect --json`` object)."""
        return {
            "file": self.file,
            "format": self.format,
            "version": self.version,
            "images": self.images,
            "regions": self.regions_found,
            "imported": self.regions_imported,
            "shapes": dict(sorted(self.shapes.items())),
            "classes": dict(sorted((classes or {}).items())),
            "issue_counts": dict(sorted(self.counts().items())),
            "warnings": self.warnings,
            "outside_links": list(self.outside_links),
        }
