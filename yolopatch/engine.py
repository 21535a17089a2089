"""Move a checkout from one patched state to another, all or nothing.

A transition is planned completely in memory (every byte of every file), checked, and only then
written: journal first, then the saved originals, then each file atomically, then the state record.
Any failure part-way restores every file already written and the state folder as they were.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, manifest
from .errors import InternalError, RefusedError
from .fsio import atomic_write, mode_of, read_or_none, remove_file, reset_fault_counter, sha256
from .manifest import FileRecord, State
from .targets import Target

NEW_FILE_MODE = 0o644


@dataclass(frozen=True)
class PlannedFile:
    rel: str            # POSIX path relative to the target root
    content: bytes
    modifies: bool      # True: edits an upstream file; False: a file the tool adds


@dataclass(frozen=True)
class Change:
    rel: str
    before: bytes | None    # bytes in the tree now (None: absent)
    after: bytes | None     # bytes to leave (None: delete)
    mode: int | None        # mode bits to leave

    @property
    def action(self) -> str:
        if self.before is None:
            return "create"
        if self.after is None:
            return "delete"
        return "modify" if self.before != self.after else "chmod"


@dataclass
class Transition:
    target: Target
    old: State | None
    new: State | None                 # None: the checkout returns to pristine and .yolopatch/ goes
    changes: list[Change] = field(default_factory=list)
    save_originals: dict[str, bytes] = field(default_factory=dict)
    create_dirs: list[str] = field(default_factory=list)
    remove_dirs: list[str] = field(default_factory=list)

    @property
    def is_noop(self) -> bool:
        return not self.changes and not self.create_dirs and not self.remove_dirs and self._same_record()

    def _same_record(self) -> bool:
        if self.old is None or self.new is None:
            return self.old is None and self.new is None
        return self.old.to_json() == self.new.to_json()


def pristine_bytes(root: Path, old: State | None, rel: str) -> bytes | None:
    """The bytes `rel` had before the tool touched it (None: it did not exist)."""
    if old is not None and rel in old.files:
        if old.files[rel].kind == "create":
            return None
        return manifest.original_path(root, rel).read_bytes()
    return read_or_none(root / rel)


def edited_files(root: Path, state: State) -> list[str]:
    """Files the tool wrote whose bytes changed since (edited by the user, or missing)."""
    edited = []
    for rel, record in state.files.items():
        data = read_or_none(root / rel)
        if data is None or sha256(data) != record.sha256:
            edited.append(rel)
    return edited


def _refuse_if_edited(root: Path, state: State | None, force: bool, hint: str) -> None:
    if state is None or force:
        return
    edited = edited_files(root, state)
    if edited:
        raise RefusedError(f"{edited[0]} was changed since yolopatch wrote it"
                           f"{f' (and {len(edited) - 1} more)' if len(edited) > 1 else ''}; {hint}")


def plan_transition(target: Target, old: State | None, planned: list[PlannedFile], recipes: list[dict],
                    force: bool = False, hint: str = "") -> Transition:
    root = target.root
    _refuse_if_edited(root, old, force, hint or "revert with --force to discard those edits")
    old_files = old.files if old else {}
    new_records: dict[str, FileRecord] = {}
    originals: dict[str, bytes] = {}
    desired: dict[str, tuple[bytes | None, int | None]] = {}

    for item in planned:
        _refuse_outside(root, item.rel)
        current = read_or_none(root / item.rel)
        if item.rel in old_files:
            kind, original_mode = old_files[item.rel].kind, old_files[item.rel].original_mode
        elif item.modifies or current == item.content:
            if current is None:
                raise RefusedError(f"{item.rel} is missing from the checkout")
            kind, original_mode = "modify", mode_of(root / item.rel)
            originals[item.rel] = current
        elif current is None:
            kind, original_mode = "create", None
        elif force:
            kind, original_mode = "modify", mode_of(root / item.rel)
            originals[item.rel] = current
        else:
            raise RefusedError(f"{item.rel} already exists with other content; move it away or apply with "
                               "--force (revert then restores it)")
        mode = original_mode if kind == "modify" else NEW_FILE_MODE
        new_records[item.rel] = FileRecord(kind=kind, sha256=sha256(item.content), mode=mode,
                                           original_mode=original_mode)
        desired[item.rel] = (item.content, mode)

    for rel, record in old_files.items():
        if rel not in desired:  # no longer written: back to pristine
            original = pristine_bytes(root, old, rel)
            desired[rel] = (original, record.original_mode if original is not None else None)

    changes = []
    for rel in sorted(desired):
        after, mode = desired[rel]
        before = read_or_none(root / rel)
        if before != after or (after is not None and mode_of(root / rel) != mode):
            changes.append(Change(rel, before, after, mode))

    created = [rel for rel, rec in new_records.items() if rec.kind == "create"]
    needed_dirs = _missing_parents(root, created, set(old.dirs if old else ()))
    kept_dirs = [d for d in (old.dirs if old else []) if any(rel.startswith(d + "/") for rel in created)]
    remove_dirs = [d for d in (old.dirs if old else []) if d not in kept_dirs]
    new_state = None
    if new_records:
        new_state = State(tool=__version__, target={"flavour": target.flavour, "version": target.version},
                          recipes=recipes, files=new_records, dirs=kept_dirs + needed_dirs)
    return Transition(target=target, old=old, new=new_state, changes=changes, save_originals=originals,
                      create_dirs=needed_dirs, remove_dirs=sorted(remove_dirs, key=len, reverse=True))


def _refuse_outside(root: Path, rel: str) -> None:
    """Every write stays inside the checkout: no absolute or '..' paths, no symlink leading out."""
    path = root / rel
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise RefusedError(f"refusing to write {rel}: not a path inside the checkout")
    if path.is_symlink():
        raise RefusedError(f"refusing to write {rel}: it is a symlink")
    real_root = root.resolve()
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.resolve().is_relative_to(real_root):
        raise RefusedError(f"refusing to write {rel}: {parent.relative_to(root)} leads outside the checkout")


def _missing_parents(root: Path, rels: list[str], known: set[str]) -> list[str]:
    missing: list[str] = []
    for rel in rels:
        parts = Path(rel).parts[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in known and folder not in missing and not (root / folder).is_dir():
                missing.append(folder)
    return sorted(missing, key=len)


# ---------------------------------------------------------------------------------------------------
def _journal(transition: Transition) -> bytes:
    """What recovery needs to bring the tree back to pristine if this run dies part-way."""
    files: dict[str, str] = {}
    for state in (transition.old, transition.new):
        if state:
            files.update({rel: rec.kind for rel, rec in state.files.items()})
    modes = {}
    for state in (transition.old, transition.new):
        if state:
            modes.update({rel: rec.original_mode for rel, rec in state.files.items()})
    dirs = sorted(set((transition.old.dirs if transition.old else []) + transition.create_dirs), key=len)
    payload = {"_": manifest.HEADER, "format": manifest.FORMAT, "tool": __version__,
               "files": files, "original_modes": modes, "dirs": dirs}
    return (json.dumps(payload, indent=2) + "\n").encode()


class _Undo:
    """Everything written so far, and how to put it back."""

    def __init__(self, root: Path):
        self.root = root
        self.files: list[tuple[Path, bytes | None, int | None]] = []
        self.dirs: list[Path] = []
        self.removed_dirs: list[Path] = []

    def remember(self, path: Path) -> None:
        self.files.append((path, read_or_none(path), mode_of(path)))

    def run(self) -> None:
        for path in reversed(self.removed_dirs):
            path.mkdir(exist_ok=True)
        for path, data, mode in reversed(self.files):
            if data is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write(path, data, mode, counted=False)
        for path in reversed(self.dirs):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def commit(transition: Transition) -> None:
    root = transition.target.root
    state_dir = manifest.state_dir(root)
    undo = _Undo(root)
    reset_fault_counter()
    try:
        _ensure_dir(state_dir, undo)
        undo.remember(manifest.journal_path(root))
        atomic_write(manifest.journal_path(root), _journal(transition))
        for rel, data in transition.save_originals.items():
            path = manifest.original_path(root, rel)
            for parent in reversed(path.relative_to(state_dir).parents[:-1]):
                _ensure_dir(state_dir / parent, undo)
            undo.remember(path)
            atomic_write(path, data, 0o644)
        for folder in transition.create_dirs:
            _ensure_dir(root / folder, undo)
        for change in transition.changes:
            path = root / change.rel
            undo.remember(path)
            if change.after is None:
                remove_file(path)
            else:
                atomic_write(path, change.after, change.mode)
        for folder in transition.remove_dirs:
            path = root / folder
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
                undo.removed_dirs.append(path)
        _finish_state(transition, undo)
    except BaseException as exc:
        undo.run()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise InternalError(f"writing failed ({exc}); every file was restored to its state before this run") from exc


def _ensure_dir(path: Path, undo: _Undo) -> None:
    if not path.is_dir():
        path.mkdir()
        undo.dirs.append(path)


def _finish_state(transition: Transition, undo: _Undo) -> None:
    root = transition.target.root
    state_path = manifest.state_dir(root) / "state.json"
    if transition.new is None:
        remove_file(manifest.journal_path(root))
        shutil.rmtree(manifest.state_dir(root))  # nothing applied any more: the checkout is pristine
        return
    undo.remember(state_path)
    atomic_write(state_path, transition.new.to_json().encode())
    remove_file(manifest.journal_path(root))
    for rel, record in (transition.old.files.items() if transition.old else []):
        if record.kind == "modify" and rel not in transition.new.files:
            manifest.original_path(root, rel).unlink(missing_ok=True)
