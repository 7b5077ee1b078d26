"""An annotation session: one dataset, one current image, autosave that never loses work.

The session is GUI-free: the napari glue (``_annotator.py``) feeds it the regions
of the image on screen and asks it to save; the widget shows its state. It keeps

- the dataset and the annotation file it came from (or will be saved to),
- which image is current, remembered per annotation file in the user's config
  folder so that reopening a dataset goes back to where the user was,
- a fingerprint (SHA-256) of the file's bytes as last read or written: a save is
  a compare and swap under a lock file, so an edit saved by another program (or
  another widget) is never overwritten unseen, however close the two saves are,
- a stack of deleted regions for undo,
- the problems found with images (missing, unreadable, outside the folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import annotations as annotation_files
from . import history, via
from .fileio import DiskChanged as DiskChanged  # raised by save(); callers catch it here
from .fileio import (
    backup_path,
    digest,
    file_digest,
    remove_stale_temporaries,
    replace_if_unchanged,
)
from .images import image_header, image_shape, read_image
from .jsonio import object_at, read_json, write_json
from .model import DEFAULT_CLASSES, FALLBACK_CLASS, BioAnomalyError, Dataset, ImageRecord, Region
from .paths import name_key, resolve_image
from .report import ImportReport
from .text import counted
from .via import ImportOptions
from .via_parse import checkbox_label, checked_options

STATUS_NOT_STARTED = "not started"
STATUS_ANNOTATED = "annotated"
STATUS_NO_ANOMALY = "checked: no anomaly"
STATUS_REVIEWED = "reviewed"
STATUS_MISSING = "missing"
STATUSES = (
    STATUS_NOT_STARTED,
    STATUS_ANNOTATED,
    STATUS_NO_ANOMALY,
    STATUS_REVIEWED,
    STATUS_MISSING,
)


def config_dir() -> Path:
    """The user's napari-bioanomaly config folder (``$XDG_CONFIG_HOME`` or ``~/.config``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "napari-bioanomaly"


@dataclass
class DeletedRegions:
    """Regions deleted together from one image, for undo."""

    image: str
    regions: list[Region]


@dataclass
class AnnotationSession:
    """State of annotating one dataset. Create with :meth:`open` or :meth:`new`."""

    dataset: Dataset
    path: Path
    report: ImportReport = field(default_factory=ImportReport)
    current: int = 0
    dirty: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    undo_stack: list[DeletedRegions] = field(default_factory=list)
    #: digest of the file's bytes as last read or written (``None``: no file yet)
    _disk: str | None = None
    #: Serialised VIA entries of images unchanged since the last save, by file name.
    _entries: dict[str, bytes] = field(default_factory=dict, repr=False)
    #: planes of the image files looked at (see :meth:`planes`), by file name
    _planes: dict[str, int] = field(default_factory=dict, repr=False)
    #: how many times the dataset changed in memory (each :meth:`touch`, each
    #: :meth:`reload`): what is computed from the whole dataset can be kept until it moves
    edits: int = field(default=0, repr=False)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls, source: str | os.PathLike[str], options: ImportOptions | None = None
    ) -> AnnotationSession:
        """Open an annotation file, or a folder (its annotation file, or a new dataset).

        Images found in a folder but not in its annotation file are added to the
        dataset, not yet annotated. Image sizes are read lazily (when an image is
        shown), so a dataset of thousands of images opens in about a second.
        """
        source = Path(source)
        if source.is_dir():
            ann = annotation_files.find_annotation_file(source)
            if ann is None:
                per_image = annotation_files.per_image_files(source)
                if per_image:
                    return cls._open_per_image(source, per_image, options)
                return cls.new(source)
            root, path = source, ann
        elif source.is_file():
            root, path = source.parent, source
        elif (imported := annotation_files.stands_for(source)) != source:
            # the edits of an import, not saved yet: the name its session went by
            return cls.open(imported, options)
        elif source.parent.is_dir() and annotation_files.list_images(source.parent):
            # the not-yet-saved annotation file of a new dataset in this folder, or of
            # the edits of its per-image files
            folder = source.parent
            existing = annotation_files.find_annotation_file(folder)
            if existing is not None or source.name not in annotation_files.ANNOTATION_NAMES:
                # a mistyped name, or a file moved away since: an empty dataset under
                # that name would hide the folder's annotations, and its save too
                hint = f" (the folder's annotation file is {existing.name})" if existing else ""
                raise BioAnomalyError(f"{source}: no such file{hint}")
            per_image = (
                annotation_files.per_image_files(folder)
                if source.name == annotation_files.PER_IMAGE_EDITS
                else []
            )
            if per_image:
                return cls._open_per_image(folder, per_image, options)
            return cls.new(folder, source.name)
        else:
            raise BioAnomalyError(f"{source}: no such file or folder")
        imported = path
        path = annotation_files.saved_edits(path) or path  # an import edited before
        remove_stale_temporaries(path)  # left by a process killed while saving
        raw = path.read_bytes() if path.suffix.lower() not in (".zip", ".roi") else None
        dataset, report = annotation_files.load(path, root, options, read_images=False, raw=raw)
        if path != imported:
            report.add("note", annotation_files.edits_note(imported, path))
            annotation_files.import_categories(dataset, imported)
            if via.imported_from_setting(dataset.settings) is None:  # saved before it said
                dataset.settings = via.with_imported_from(
                    dataset.settings, dataset.class_attribute, imported.name
                )
        disk = digest(raw) if raw is not None else None
        if source.is_dir() or imported.name in annotation_files.ANNOTATION_NAMES:
            if note := annotation_files.unread_per_image_note(root, imported):
                report.add("note", note)
        if report.format not in annotation_files.VIA_FORMATS:
            # COCO, ImageJ or GeoJSON are imported: edits go to a VIA project beside them
            imported_from = path
            path = annotation_files.edit_target(path, report.format)
            # the project says whose edits it holds (another import of this stem is refused)
            dataset.settings = via.with_imported_from(
                dataset.settings, dataset.class_attribute, imported_from.name
            )
            report.add(
                "note",
                f"imported from {report.format} file {imported_from.name}; "
                f"changes are saved to {path.name}",
            )
            disk = file_digest(path)
        return cls._opened(dataset, report, root, path, disk, source.is_dir())

    @classmethod
    def _open_per_image(
        cls, folder: Path, names: list[str], options: ImportOptions | None
    ) -> AnnotationSession:
        """A folder of per-image files (Fiji ROI sets, GeoJSON) and no annotation file,
        read as the CLI reads it (:func:`~.annotations.open_folder`); edits are saved to
        :data:`~.annotations.PER_IMAGE_EDITS` beside them, which from then on is the
        folder's annotation file (the per-image files are no longer read)."""
        dataset, report = annotation_files.load_per_image(folder, names, folder, options)
        path = folder / annotation_files.PER_IMAGE_EDITS
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        report.add(
            "note",
            f"imported from {report.format.removesuffix(' folder')} files of this folder "
            f"({counted(len(names), 'file')}: {shown}); changes are saved to {path.name}, "
            "which is read instead of them from then on",
        )
        session = cls._opened(dataset, report, folder, path, None, True)
        # the images with a file came first, the others after: in name order, as the CLI
        # (open_folder) and a folder without annotations list them
        session.dataset.images.sort(key=lambda im: im.filename)
        session.current = session._remembered_index()
        return session

    @classmethod
    def _opened(
        cls,
        dataset: Dataset,
        report: ImportReport,
        root: Path,
        path: Path,
        disk: str | None,
        whole_folder: bool,
    ) -> AnnotationSession:
        """The session of a dataset read from ``path``'s file: with ``whole_folder``, the
        images of ``root`` it lacks are added; an import keeps its own classes."""
        outside: list[str] = []
        present = annotation_files.list_images(root, outside)
        if whole_folder:
            known = {name_key(im.filename) for im in dataset.images}
            for name in present:
                if name_key(name) not in known and not name.endswith("_labels.tif"):
                    dataset.images.append(ImageRecord(name))
            # the file's own images among them are marked missing, with why, already
            unlisted = [n for n in outside if name_key(n) not in known]
            annotation_files.report_outside_links(report, root, unlisted)
        _own_classes(dataset)
        session = cls(dataset, path, report, _disk=disk)
        session.check_images(set(present))
        session.current = session._remembered_index()
        return session

    @classmethod
    def new(
        cls, folder: str | os.PathLike[str], name: str = "annotations.json"
    ) -> AnnotationSession:
        """A new dataset of every image in ``folder``; saved to ``folder/name`` on first change.

        Links that lead outside ``folder`` are left out and said in :attr:`report` (see
        :func:`~.annotations.outside_links_note`).
        """
        folder = Path(folder)
        outside: list[str] = []
        names = annotation_files.list_images(folder, outside)
        if not names:
            links = annotation_files.outside_links_note(folder, outside)
            raise BioAnomalyError(f"{folder}: no images (TIFF, PNG, JPEG) in this folder"
                                  + (f"; {links}" if links else ""))  # fmt: skip
        path = folder / name
        if path.exists():
            raise BioAnomalyError(f"{path}: already exists; open it instead")
        dataset = Dataset(
            images=[ImageRecord(n) for n in names], root=folder, classes=list(DEFAULT_CLASSES)
        )
        report = ImportReport(file=str(path), format="new")
        annotation_files.report_outside_links(report, folder, outside)
        if note := annotation_files.predictions_note(folder):
            report.add("note", note)
        session = cls(dataset, path, report)
        session.check_images()
        return session

    def check_images(self, present: set[str] | None = None) -> None:
        """Record images whose file is missing or outside the dataset folder.

        One folder listing (``present``, made here if not given) answers for plain
        relative names; only the others (``..``, absolute paths, URLs) are
        resolved one by one.
        """
        root = self.dataset.root or self.path.parent
        if present is None:
            present = set(annotation_files.list_images(root)) if root.is_dir() else set()
        for im in self.dataset.images:
            name = im.filename
            if name in present and ".." not in name.split("/"):
                continue
            try:
                if not resolve_image(root, name).is_file():
                    self.problems[name] = "image file not found"
            except BioAnomalyError as exc:
                self.problems[name] = str(exc)

    # ------------------------------------------------------------------ images

    @property
    def image(self) -> ImageRecord:
        return self.dataset.images[self.current]

    def status(self, index: int) -> str:
        """Status of image ``index`` for the image list."""
        im = self.dataset.images[index]
        if im.filename in self.problems:
            return STATUS_MISSING
        if im.reviewed:
            return STATUS_REVIEWED
        if im.no_anomaly:
            return STATUS_NO_ANOMALY
        if im.regions:
            return STATUS_ANNOTATED
        return STATUS_NOT_STARTED

    def read_pixels(self, index: int) -> np.ndarray:
        """Pixels of image ``index``; records its size and clips its regions to it.

        Raises :class:`BioAnomalyError` (and records the problem) when the image
        cannot be read.
        """
        data = self._read(index, read_image)
        self._set_shape(index, (int(data.shape[0]), int(data.shape[1])))
        return data

    def planes(self, index: int) -> int:
        """How many planes the file of image ``index`` holds (a TIFF stack: more than 1,
        of which the first is read); 1 when it cannot be told."""
        name = self.dataset.images[index].filename
        if name not in self._planes:
            try:
                root = self.dataset.root or self.path.parent
                self._planes[name] = image_header(resolve_image(root, name))[1]
            except BioAnomalyError:
                self._planes[name] = 1
        return self._planes[name]

    def read_shape(self, index: int) -> tuple[int, int]:
        """Size of image ``index`` from its header (no pixels); clips its regions like
        :meth:`read_pixels`. Raises :class:`BioAnomalyError` when it cannot be read."""
        shape = self._read(index, image_shape)
        self._set_shape(index, shape)
        return shape

    def _read(self, index: int, reader: Any) -> Any:
        im = self.dataset.images[index]
        root = self.dataset.root or self.path.parent
        try:
            out = reader(resolve_image(root, im.filename))
        except BioAnomalyError as exc:
            self.problems[im.filename] = str(exc)
            raise
        self.problems.pop(im.filename, None)
        return out

    def set_shape(self, index: int, shape: tuple[int, int]) -> None:
        """Set the size of image ``index`` as read from its file (elsewhere: a worker's
        :meth:`~.review.ReviewSession.opening`); clips its regions like :meth:`read_shape`."""
        self.problems.pop(self.dataset.images[index].filename, None)
        self._set_shape(index, shape)

    def _set_shape(self, index: int, shape: tuple[int, int]) -> None:
        im = self.dataset.images[index]
        if im.shape == shape:
            return
        before = len(self.report.issues)
        if im.shape is not None and im.shape == shape[::-1]:
            # a JPEG turned by its EXIF orientation (read as viewers show it since
            # 2026-12-07), recorded unturned by a COCO or GeoJSON file: its regions are
            # kept as they are, not clipped to the turned size and saved so
            self.report.add(
                "image",
                f"recorded size {im.shape[0]}x{im.shape[1]} is the file's "
                f"{shape[0]}x{shape[1]} turned by a quarter (an EXIF orientation, shown as "
                "viewers show it, or width and height swapped in the file): regions kept as "
                "recorded, not clipped; check they line up",
                im.filename,
            )
            im.shape = shape
            return
        if im.shape is not None:
            self.report.add(
                "image",
                f"recorded size {im.shape[0]}x{im.shape[1]} differs from the file's "
                f"{shape[0]}x{shape[1]}; regions clipped to the file's",
                im.filename,
            )
        im.shape = shape
        annotation_files.clip_regions(im, self.report)
        if len(self.report.issues) > before:
            self.touch(index)

    def go_to(self, index: int) -> None:
        """Make image ``index`` current (the caller saves the previous one first)."""
        if not 0 <= index < len(self.dataset.images):
            raise IndexError(f"image index {index} out of range 0..{len(self.dataset.images) - 1}")
        self.current = index
        self._remember()

    # ------------------------------------------------------------------ edits

    def touch(self, index: int | None = None) -> None:
        """Mark an image (default: the current one) changed, so the next save writes it."""
        im = self.dataset.images[self.current if index is None else index]
        self._entries.pop(im.filename, None)
        self.dirty = True
        self.edits += 1

    def set_regions(self, regions: list[Region], index: int | None = None) -> bool:
        """Replace an image's regions; returns whether anything changed."""
        im = self.dataset.images[self.current if index is None else index]
        if _same_regions(im.regions, regions):
            return False
        im.regions = list(regions)
        if regions and im.no_anomaly:
            im.no_anomaly = False
        options = None
        for r in regions:
            if r.label in self.dataset.classes or _unclassified(r):
                continue  # the label of regions with no class is no class to offer
            if options is None:
                options = set().union(*via.checkbox_classes(self.dataset).values())
            if len(checked_options(r.label, options)) > 1:
                continue  # checkbox options ticked together: each is a class already
            self.dataset.classes.append(r.label)
        self.touch(self.current if index is None else index)
        return True

    def set_flag(self, name: str, value: bool, index: int | None = None) -> None:
        """Set ``no_anomaly`` or ``reviewed`` of an image."""
        if name not in ("no_anomaly", "reviewed"):
            raise ValueError(name)
        im = self.dataset.images[self.current if index is None else index]
        if getattr(im, name) != value:
            setattr(im, name, value)
            self.touch(self.current if index is None else index)

    def set_file_attributes(self, attributes: dict[str, Any], index: int | None = None) -> None:
        im = self.dataset.images[self.current if index is None else index]
        if im.file_attributes != attributes:
            im.file_attributes = dict(attributes)
            self.touch(self.current if index is None else index)

    def set_classes(self, classes: list[str]) -> None:
        """Replace the class list (order kept); classes in use cannot be dropped.

        Only classes of the list are checked: labels in use that were never in it (the
        label of regions with no class, a combination of checkbox options) do not stop
        a change, such as adding a class, that keeps the list's own."""
        dropped = set(self.dataset.classes) - set(classes)
        missing = sorted(dropped & self.used_classes()) if dropped else []
        if missing:
            raise BioAnomalyError(f"classes still in use: {', '.join(missing)}")
        if classes != self.dataset.classes:
            self.dataset.classes = list(dict.fromkeys(classes))
            self.dirty = True

    def class_attributes(self) -> list[str]:
        """The region attributes the classes could be read from: the class attribute, and
        those the regions have or the file defines (not of type ``image``)."""
        ds = self.dataset
        defined = object_at(ds.attribute_definitions, "region")
        kinds = {n: d.get("type") if isinstance(d, dict) else None for n, d in defined.items()}
        names = dict.fromkeys([ds.class_attribute, *(n for n, t in kinds.items() if t != "image")])
        for region in ds.regions:
            names.update(
                dict.fromkeys(k for k, v in region.attributes.items() if isinstance(v, (str, dict)))
            )
        # a model's score and source are read before the class is: never a class attribute
        return [n for n in names if n not in ("score", "source")]

    def set_class_attribute(self, name: str) -> ImportReport:
        """Read the classes from the region attribute ``name`` (a VIA file's classes under
        an attribute napari-bioanomaly does not look for, such as ``defect``). Every region
        is read again from the dataset as it is now, unsaved changes included: its class
        from ``name`` (regions without it have none), the class it had kept under the
        attribute it came from. The choice is recorded in the file's settings, so it is
        read the same way when opened again (by napari, the CLI, VIA's region labels).
        Returns the report of reading the regions again (its warnings are the user's)."""
        ds = self.dataset
        name = name.strip()
        if not name or name == ds.class_attribute:
            return ImportReport(file=str(self.path))
        ds.settings = via.with_class_attribute(ds.settings, name)
        data = via.to_via_project(ds)
        new, report = via.read_via(data, str(self.path), ImportOptions(class_attribute=name))
        new.root, new.categories = ds.root, ds.categories
        shapes = {im.filename: im.shape for im in ds.images}
        for im in new.images:
            im.shape = shapes.get(im.filename)
        _own_classes(new)
        self.dataset = new
        # what the file's reading said of the classes is said of the new choice now
        self.report.issues = [i for i in self.report.issues
                              if not (i.kind == "class" and _NO_CLASS in i.message)]  # fmt: skip
        self.report.issues += [i for i in report.issues
                               if i.kind == "class" and _NO_CLASS in i.message]  # fmt: skip
        self._entries.clear()
        self.undo_stack.clear()
        self.dirty = True
        self.edits += 1
        return report

    def used_classes(self) -> set[str]:
        """The classes regions of any image use: their labels and, for a combination of
        checkbox options (:func:`~.via_parse.join_options`), each option ticked."""
        labels = {r.label for im in self.dataset.images for r in im.regions}
        options = set().union(*via.checkbox_classes(self.dataset).values())
        used = set(labels)
        if options:
            for label in labels:
                used.update(checked_options(label, options))
        return used

    def rename_class(self, old: str, new: str) -> dict[str, str]:
        """Rename a class everywhere (regions of all images included, checkbox options
        ticked together with others too); returns the labels changed, old to new."""
        new = new.strip()
        if not new:
            raise BioAnomalyError("a class name cannot be empty")
        if new in self.dataset.classes and new != old:
            raise BioAnomalyError(f"class {new!r} exists already")
        self.dataset.classes = [new if c == old else c for c in self.dataset.classes]
        options = set().union(*via.checkbox_classes(self.dataset).values())
        renamed = {o for o in options if o != old} | {new}
        changed = {old: new}
        touched: list[str] = []  # the images whose entries change (2,000 encoded again took 0.75 s)
        for im in self.dataset.images:
            before = len(touched)
            for r in im.regions:
                if r.label == old:
                    r.label = new
                elif old in options and old in (ids := checked_options(r.label, options)):
                    # checkbox options ticked together: the option renamed inside them
                    label = checkbox_label([new if i == old else i for i in ids], renamed)
                    changed[r.label], r.label = label, label
                else:
                    continue
                if len(touched) == before:
                    touched.append(im.filename)
        self._rename_option(old, new)
        categories = self.dataset.categories  # a COCO file's id and supercategory go along
        if old in categories:  # over that of a class of the new name removed before
            categories[new] = categories.pop(old)
        if options:  # which options a label ticks depends on them all: every image again
            self._entries.clear()
        else:
            for name in touched:
                self._entries.pop(name, None)
        self.dirty = True
        self.edits += 1  # a review opening scored the old names: it scores them again
        return changed

    def _rename_option(self, old: str, new: str) -> None:
        """Rename the option id ``old`` of the dataset's checkbox, radio and dropdown
        attribute definitions (its description too where it was the id)."""
        region = self.dataset.attribute_definitions.get("region")
        # the class attributes' definitions only: an option of that name in another
        # attribute (a 'cause' of 'dust') is no class, and its regions keep their values
        keys = {self.dataset.class_attribute}
        keys |= {r.class_attribute for r in self.dataset.regions if r.class_attribute}
        for key, definition in region.items() if isinstance(region, dict) else ():
            if key not in keys or not isinstance(definition, dict):
                continue
            for key in ("options", "default_options"):
                values = definition.get(key)
                if isinstance(values, dict) and old in values and new not in values:
                    definition[key] = {
                        (new if k == old else k): (new if k == old and v == old else v)
                        for k, v in values.items()
                    }

    def push_deleted(self, regions: list[Region], index: int | None = None) -> None:
        if regions:
            im = self.dataset.images[self.current if index is None else index]
            self.undo_stack.append(DeletedRegions(im.filename, list(regions)))
            del self.undo_stack[:-100]

    def pop_deleted(self) -> DeletedRegions | None:
        """The last deleted regions (the caller puts them back on their image)."""
        return self.undo_stack.pop() if self.undo_stack else None

    # ------------------------------------------------------------------ saving

    def disk_changed(self) -> bool:
        """Whether the annotation file changed on disk since we last read or wrote it."""
        return file_digest(self.path) != self._disk

    def save(self, force: bool = False) -> Path | None:
        """Write the dataset as a VIA 2 project (atomic, previous file kept as ``.bak``).

        Does nothing when nothing changed. Raises :class:`DiskChanged` instead of
        overwriting a file someone else changed (or writing one they moved away),
        unless ``force`` (their version is then kept among the earlier versions, see
        :mod:`.history`, and as the ``.bak``).
        """
        if not self.dirty and not force:
            return None
        raw = self._serialise()
        # every INTERVAL, the version this save replaces; always another program's version
        # saved over (the .bak alone lasted until the next edit)
        history.keep_version(self.path, force=force)
        self._disk = replace_if_unchanged(self.path, raw, self._disk, force)
        self.dirty = False
        self._remember()
        return self.path

    def encode_ahead(self) -> None:
        """Encode every image's entry for the first save ahead of it (see
        :func:`~.via_write.encode_entries`): called by the worker that opened the session,
        before any other thread has it."""
        via.encode_entries(self.dataset, self._entries)

    def _serialise(self) -> bytes:
        """The VIA 2 project as JSON bytes, re-encoding only the images changed since last time."""
        ds = self.dataset
        return via.encode_cached(lambda entries: via.to_via_project(ds, entries), ds, self._entries)

    def save_copy(self, path: str | os.PathLike[str]) -> Path:
        """Write the dataset to another file (when the original changed on disk, or cannot
        be written); the session stays with its own file, unsaved changes and all."""
        path = Path(path)
        own = (self.path, backup_path(self.path))
        same = any(path.resolve() == p.resolve() or (path.exists() and p.exists()
                   and os.path.samefile(path, p)) for p in own)  # fmt: skip
        if same:  # samefile: another case of the name on a case-insensitive disk
            raise BioAnomalyError(f"{path}: that is the dataset's own file (or its .bak); "
                                  "choose another")  # fmt: skip
        if path.resolve().parent == history.history_dir(self.path).resolve():
            raise BioAnomalyError(f"{path}: inside the folder of earlier versions, which "
                                  "drops its oldest files; choose another")  # fmt: skip
        annotation_files.save(self.dataset, path, "via-project")
        return path

    def restore(self, version: str | os.PathLike[str]) -> Path | None:
        """Go back to a kept version of the annotation file (see :mod:`.history`): it
        replaces the file (the current one kept as a version first, returned; None where
        the file was gone) and is read again; changes not saved yet are dropped."""
        kept = history.restore(self.path, version)
        self.reload()
        return kept

    def reload(self) -> None:
        """Discard changes and read the annotation file again."""
        raw = self.path.read_bytes()
        dataset, report = annotation_files.load(self.path, self.dataset.root, read_images=False,
                                           raw=raw)  # fmt: skip
        known = {im.filename: im for im in dataset.images}
        for im in self.dataset.images:  # keep images not yet in the file (new dataset)
            if im.filename not in known:
                dataset.images.append(ImageRecord(im.filename, im.shape))
        dataset.categories = dataset.categories or self.dataset.categories  # an import's
        self.dataset, self.report = dataset, report
        self._entries.clear()
        self._disk = digest(raw)
        self.dirty = False
        self.edits += 1
        self.undo_stack.clear()
        self.current = min(self.current, len(dataset.images) - 1)

    # ------------------------------------------------------------------ where the user was

    @staticmethod
    def _state_file() -> Path:
        return config_dir() / "sessions.json"

    def _remember(self) -> None:
        """Store the current image for this annotation file (best effort, never fatal)."""
        try:
            state = read_json(self._state_file()) if self._state_file().exists() else {}
            if not isinstance(state, dict):
                state = {}
            files = object_at(state, "files")
            files[str(self.path.resolve())] = self.image.filename if self.dataset.images else None
            state["files"] = dict(list(files.items())[-200:])
            state["last"] = str(self.path.resolve())
            write_json(self._state_file(), state, indent=1)
        except (OSError, BioAnomalyError, ValueError):
            pass

    def _remembered_index(self) -> int:
        try:
            state = read_json(self._state_file())
            name = state["files"][str(self.path.resolve())]
        except (BioAnomalyError, KeyError, TypeError):
            return 0
        for i, im in enumerate(self.dataset.images):
            if im.filename == name:
                return i
        return 0

    @classmethod
    def last_opened(cls) -> Path | None:
        """The annotation file of the last session, if it still exists."""
        try:
            last = Path(read_json(cls._state_file())["last"])
        except (BioAnomalyError, KeyError, TypeError):
            return None
        return last if last.is_file() else None


def _same_regions(a: list[Region], b: list[Region]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if (x.label, x.score, x.source, x.attributes) != (y.label, y.score, y.source, y.attributes):
            return False
        if x.polygon.shape != y.polygon.shape or not np.allclose(x.polygon, y.polygon, atol=1e-6):
            return False
    return True


def summary(session: AnnotationSession) -> dict[str, Any]:
    """Counts per status, for the widget's header and for tests."""
    counts = {s: 0 for s in STATUSES}
    for i in range(len(session.dataset.images)):
        counts[session.status(i)] += 1
    return counts


#: what an import says of regions without the class attribute (``via_parse``)
_NO_CLASS = "no class attribute"


def _own_classes(dataset: Dataset) -> None:
    """An annotation file or import keeps its own classes (the defaults are only a new
    dataset's, see :meth:`AnnotationSession.new`): where it lists none, those its regions
    are of (the label of regions with no class is none)."""
    if not dataset.classes:
        named = {r.label for r in dataset.regions if not _unclassified(r)}
        dataset.classes = [c for c in dataset.class_names() if c in named]


def _unclassified(region: Region) -> bool:
    """Whether ``region`` was given no class: shown with the fallback label, which is no
    class to offer (a region its file classed ``anomaly`` is one)."""
    return region.label == FALLBACK_CLASS and region.unlabelled is not None
