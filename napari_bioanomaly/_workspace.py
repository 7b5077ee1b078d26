"""One workspace per napari viewer: the state the Annotate, Train and Review widgets share.

Each widget used to open its own :class:`~.core.session.AnnotationSession` on the same
annotation file, so two widgets held two copies of the same annotations and
the later save silently dropped the other's edits. The workspace owns one
session per annotation file; every widget asks it for the session (and the
napari glue for the one :class:`~napari_bioanomaly._annotator.Annotator` that
shows it), so there is one copy of each file's annotations in a viewer. It
also keeps what the widgets hand to each other: the training settings of the
Train widget (which "Train & review" uses), the last model and predictions,
and the state of the running job.

Qt-free (psygnal events, as napari's own), so it is tested without a GUI;
:func:`workspace_for` gives each viewer its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from psygnal import Signal

from .core.model import BioAnomalyError
from .core.session import AnnotationSession
from .core.via import ImportOptions

#: States of the workspace's long job (training or prediction).
JOB_STATES = ("idle", "running", "stopping", "done", "failed")


class _PathSetting:
    """A path the workspace holds (``None`` or a :class:`Path`); setting it emits
    ``changed`` with its name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__.get(f"_{self.name}")

    def __set__(self, obj: Any, value: str | os.PathLike[str] | None) -> None:
        obj.__dict__[f"_{self.name}"] = None if value is None else Path(value)
        obj.changed.emit(self.name)


class Workspace:
    """Sessions by annotation file, shared settings and the state of the running job."""

    #: a session was opened (the first time its annotation file was asked for)
    session_opened = Signal(object)
    #: the job state changed: ``(state, message)``
    job_changed = Signal(str, str)
    #: the training settings, last model or last predictions changed
    changed = Signal(str)

    def __init__(self) -> None:
        self._sessions: dict[Path, AnnotationSession] = {}
        #: napari glue kept per annotation file: the shared annotator (opaque here) and,
        #: per widget using it (by ``id``), the slots it connected
        self.views: dict[Path, tuple[Any, dict[int, list[tuple[str, Any]]]]] = {}
        self._train_config: Callable[[], Any] | None = None
        self._job = "idle"
        #: viewer keys the widgets bound: key -> (widget id, function), the one in force last
        self.keys: dict[str, list[tuple[int, Callable[..., Any]]]] = {}

    # ------------------------------------------------------------------ sessions

    def session(
        self, source: str | os.PathLike[str], options: ImportOptions | None = None
    ) -> AnnotationSession:
        """The session of an annotation file or dataset folder: opened the first time,
        the same object every time after (for the same annotation file)."""
        return self.opened(source) or self.adopt(AnnotationSession.open(source, options))

    def opened(self, source: str | os.PathLike[str]) -> AnnotationSession | None:
        """The session of ``source`` where one is open already, else None."""
        for key in _keys(Path(source)):
            if key in self._sessions:
                return self._sessions[key]
        return None

    def holds(self, session: AnnotationSession) -> bool:
        """Whether a session of ``session``'s file is open (no file is read: a worker's
        session, before :meth:`adopt`)."""
        return session.path.resolve() in self._sessions

    def out_of_date(self, session: AnnotationSession) -> bool:
        """Whether ``session``, read in a worker, missed a save of its file made meanwhile
        (by the other widget, closed since): none of its file is open, and the file is no
        longer what was read. Adopted, it would show old annotations, and its first save
        would be a conflict: read it again. Hashes the file (45 ms for a real 31 MiB file
        of 2,000 images), so only where it is not held."""
        return not self.holds(session) and session.disk_changed()

    def adopt(self, session: AnnotationSession) -> AnnotationSession:
        """The session of ``session``'s file from now on: ``session`` (opened elsewhere,
        e.g. in a worker thread), or the one open already for that file (opened meanwhile,
        or under another name of it)."""
        key = session.path.resolve()
        if key in self._sessions:
            return self._sessions[key]
        self._sessions[key] = session
        self.session_opened.emit(session)
        return session

    @property
    def sessions(self) -> list[AnnotationSession]:
        return list(self._sessions.values())

    def forget(self, session: AnnotationSession) -> None:
        """Drop a session (after it was saved) so the next :meth:`session` reads the file."""
        key = session.path.resolve()
        if self._sessions.get(key) is session:
            del self._sessions[key]
            self.views.pop(key, None)

    # ------------------------------------------------------------------ shared settings

    @property
    def train_config(self) -> Any:
        """The Train widget's current settings (a :class:`~.ml.config.TrainConfig`), or
        ``None`` when no Train widget is open; invalid settings raise its error."""
        return self._train_config() if self._train_config is not None else None

    def provide_train_config(self, provider: Callable[[], Any] | None) -> None:
        """Where :attr:`train_config` comes from (the Train widget's form; ``None``: none)."""
        self._train_config = provider
        self.changed.emit("train_config")

    #: the annotation file of the dataset a widget showed last (Annotate's dataset, Review's
    #: ground truth): the one the Train widget trains on, unless another is chosen there
    annotations_path = _PathSetting()
    #: the model trained (or chosen) last
    model_path = _PathSetting()
    #: the predictions written last
    predictions_path = _PathSetting()

    # ------------------------------------------------------------------ the running job

    @property
    def job(self) -> str:
        """``idle``, ``running``, ``stopping``, ``done`` or ``failed``."""
        return self._job

    def set_job(self, state: str, message: str = "") -> None:
        """Enter ``state``; ``done`` and ``failed`` only end a job that runs."""
        if state in ("done", "failed") and not self.busy:
            return
        if state not in JOB_STATES:
            raise ValueError(f"job state must be one of {JOB_STATES}, not {state!r}")
        self._job = state
        self.job_changed.emit(state, message)

    @property
    def busy(self) -> bool:
        """Whether a job runs (a second one must wait)."""
        return self._job in ("running", "stopping")


def _keys(source: Path) -> list[Path]:
    """Annotation files ``source`` may stand for, resolved (a folder: its annotation file)."""
    from .core import annotations

    found = annotations.find_annotation_file(source) if source.is_dir() else source
    if found is None:
        return [(source / name).resolve() for name in annotations.ANNOTATION_NAMES[:1]]
    try:  # an import's session is that of its edits (without reading it all again)
        edits = annotations.saved_edits(found) if found.is_file() else None
    except BioAnomalyError:
        edits = None  # opening it says what is wrong
    return [p.resolve() for p in (found, edits) if p is not None]


_WORKSPACES: WeakKeyDictionary[Any, Workspace] = WeakKeyDictionary()


def unwrapped(obj: Any) -> Any:
    """What a proxy of napari's stands for, or ``obj``: napari hands each plugin widget a
    proxy of the viewer (``napari.utils._proxies``), of its own, dropped later; its
    window's Qt window is one too (no Qt parent)."""
    return getattr(obj, "__wrapped__", obj)


def workspace_for(viewer: Any) -> Workspace:
    """The workspace of a napari viewer (made the first time a widget asks for it)."""
    # the viewer itself is the key: a proxy's entry went with the proxy
    viewer = unwrapped(viewer)
    try:
        return _WORKSPACES[viewer]
    except KeyError:
        workspace = _WORKSPACES[viewer] = Workspace()
        return workspace
    except TypeError:  # pragma: no cover - a viewer that cannot be weakly referenced
        return Workspace()


def shared_annotator(
    viewer: Any,
    session: AnnotationSession,
    owner: object,
    connect: dict[str, Callable[..., Any]] | None = None,
    **kwargs: Any,
) -> Any:
    """The one :class:`~._annotator.Annotator` of ``session`` in ``viewer``, made the first
    time (``kwargs`` go to its constructor then) and shared by every widget after.

    ``owner`` (a widget) holds it until :func:`release_annotator`, with its slots
    ``connect`` (signal name -> slot) connected meanwhile; names starting with ``on_``
    are the annotator's callbacks (``on_conflict``, ``on_save_failed``: the dialogs,
    shown over the owner): the latest owner's are used, and when it lets go, those of
    one still holding it. The last owner's release saves and closes it, so a widget
    closing never pulls the layers from under another that still edits them.
    """
    from ._annotator import Annotator

    workspace = workspace_for(viewer)
    key = session.path.resolve()
    entry = workspace.views.get(key)
    if entry is None or entry[0].session is not session:
        entry = workspace.views[key] = (Annotator(viewer, session, **kwargs), {})
    annotator, owners = entry
    for name, slot in owners.pop(id(owner), []):  # held before: those slots go first
        if not name.startswith("on_"):
            getattr(annotator, name).disconnect(slot)
    slots = list((connect or {}).items())
    for name, slot in slots:
        if name.startswith("on_"):
            setattr(annotator, name, slot)
        else:
            getattr(annotator, name).connect(slot)
    owners[id(owner)] = slots  # latest last: its callbacks are the ones in use
    workspace.annotations_path = session.path  # the dataset on screen now
    return annotator


def release_annotator(viewer: Any, annotator: Any, owner: object) -> None:
    """``owner`` no longer uses ``annotator``: its slots are disconnected; saved and closed
    when nobody else uses it."""
    workspace = workspace_for(viewer)
    key = annotator.session.path.resolve()
    entry = workspace.views.get(key)
    if entry is None or entry[0] is not annotator:
        annotator.close()
        return
    for name, slot in entry[1].pop(id(owner), []):
        if not name.startswith("on_"):
            getattr(annotator, name).disconnect(slot)
    for slots in entry[1].values():  # the callbacks of those still holding it, latest last
        for name, slot in slots:
            if name.startswith("on_"):
                setattr(annotator, name, slot)
    if not entry[1]:
        annotator.close()
        workspace.forget(annotator.session)


def bind_keys(
    viewer: Any,
    owner: object,
    keys: dict[str, Callable[..., Any]],
    under: Iterable[str] = (),
) -> None:
    """Bind ``keys`` (napari key -> function of the viewer) on the viewer for ``owner`` (a
    widget). A key that several widgets bind calls the latest one's; when that one lets
    go (:func:`unbind_keys`, as it closes) the key calls the one before's again, instead
    of a closed widget or nothing. Keys in ``under`` go below the other widgets' bindings
    of the same key (a fallback, in force only where no other widget binds it)."""
    workspace = workspace_for(viewer)
    below = set(under)
    for key, func in keys.items():
        stack = workspace.keys.setdefault(key, [])
        stack[:] = [(o, f) for o, f in stack if o != id(owner)]
        stack.insert(0 if key in below else len(stack), (id(owner), func))
        viewer.bind_key(key, stack[-1][1], overwrite=True)


def unbind_keys(viewer: Any, owner: object) -> None:
    """Take ``owner``'s keys away (see :func:`bind_keys`)."""
    workspace = workspace_for(viewer)
    for key, stack in workspace.keys.items():
        kept = [(o, f) for o, f in stack if o != id(owner)]
        if len(kept) != len(stack):
            stack[:] = kept
            viewer.bind_key(key, kept[-1][1] if kept else None, overwrite=True)
