"""Move a checkout from one patched state to another, all or nothing, keeping the user's edits.

plan      every byte of every file is computed in memory (this module). A file the user edited since
          yolopatch wrote it is merged three ways (merge.py): base = yolopatch's previous version
          (.yolopatch/written/), theirs = the bytes on disk, ours = what this run wants. Overlapping edits
          are a conflict. The plan ends as a list of writes: the state folder's copies, the tree, the record.
preflight every folder and file to change must be writable by this process (preflight.py).
journal   the before-image of everything the run changes is written first (journal.py).
write     each change atomically, in order (writer.py).
rollback  on any failure the journal is replayed; what cannot be restored is named, the journal stays.

Recovery of an interrupted run, the state-folder cleanup and the lock file go through the same path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, manifest, writer
from .errors import RefusedError
from .fsio import kept_copy_name, mode_of, read_or_none, sha256
from .journal import Op
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
    after: bytes | None     # bytes to leave (None: delete); for a conflict, the text with conflict markers
    mode: int | None        # mode bits to leave
    note: str = ""          # how the user's edits were treated, for the summary

    @property
    def action(self) -> str:
        if self.before is None:
            return "create"
        if self.after is None:
            return "delete"
        return "modify" if self.before != self.after else "chmod"


@dataclass(frozen=True)
class Conflict:
    rel: str
    reason: str             # "your edits at lines 3-5 overlap …"
    kept_as: str | None     # where --force keeps the user's version (None: nothing of theirs to keep)


@dataclass
class Transition:
    target: Target
    old: State | None
    new: State | None                 # None: the checkout returns to pristine and .yolopatch/ goes
    changes: list[Change] = field(default_factory=list)   # the tree, as shown by --dry-run / --diff
    ops: list[Op] = field(default_factory=list)           # every write, tree and state folder, in order
    conflicts: list[Conflict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)        # edits merged, files kept: told to the user

    @property
    def is_noop(self) -> bool:
        return not self.ops and not self.conflicts


# ---------------------------------------------------------------------------------------------------
# what the tool wrote, what is pristine, what the user changed

def pristine_bytes(root: Path, old: State | None, rel: str) -> bytes | None:
    """The bytes `rel` had before the tool touched it (None: it did not exist)."""
    if old is not None and rel in old.files:
        if old.files[rel].kind == "create":
            return None
        return manifest.original_path(root, rel).read_bytes()
    return read_or_none(root / rel)


def tool_version(root: Path, state: State, rel: str) -> bytes | None:
    """yolopatch's own last version of `rel` (None when unknown: a format-1 state folder and an edited file)."""
    digest = state.files[rel].sha256
    for candidate in (manifest.written_path(root, rel), root / rel):
        data = read_or_none(candidate)
        if data is not None and sha256(data) == digest:
            return data
    return None


def edited_files(root: Path, state: State) -> list[str]:
    """Files the tool wrote whose bytes changed since (edited by the user, or missing)."""
    edited = []
    for rel, record in state.files.items():
        data = read_or_none(root / rel)
        if data is None or sha256(data) != record.sha256:
            edited.append(rel)
    return edited


# ---------------------------------------------------------------------------------------------------
# planning

def plan_transition(target: Target, old: State | None, planned: list[PlannedFile], recipes: list[dict],
                    force: bool = False, verb: str = "apply") -> Transition:
    """The move from `old` to the state whose files are `planned` (empty: pristine). `verb` names the
    command in messages ("apply" / "revert")."""
    root = target.root
    old_files = old.files if old else {}
    records: dict[str, FileRecord] = {}
    originals: dict[str, bytes] = {}
    versions: dict[str, bytes] = {}                            # yolopatch's version of every file it keeps
    desired: dict[str, tuple[bytes | None, int | None]] = {}
    notes: list[str] = []

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
            notes.append(f"{item.rel} had other content: replaced, and its bytes are saved in "
                         f"{manifest.STATE_DIR}/originals/ (`yolopatch revert` puts them back)")
        else:
            raise RefusedError(f"{item.rel} already exists with other content; move it away, or apply with --force "
                               f"to replace it (its bytes are saved and `yolopatch revert` puts them back)")
        mode = original_mode if kind == "modify" else NEW_FILE_MODE
        records[item.rel] = FileRecord(kind=kind, sha256=sha256(item.content), mode=mode,
                                       original_mode=original_mode)
        versions[item.rel] = item.content
        desired[item.rel] = (item.content, mode)

    for rel, record in old_files.items():
        if rel not in desired:  # no longer written: back to pristine
            original = pristine_bytes(root, old, rel)
            desired[rel] = (original, record.original_mode if original is not None else None)

    changes: list[Change] = []
    conflicts: list[Conflict] = []
    taken = set(desired)
    for rel in sorted(desired):
        ours, mode = desired[rel]
        theirs = read_or_none(root / rel)
        base = tool_version(root, old, rel) if rel in old_files else None
        if rel not in old_files or (theirs is not None and theirs == base):   # not edited by the user
            if theirs != ours or (ours is not None and mode_of(root / rel) != mode):
                changes.append(Change(rel, theirs, ours, mode))
            continue
        _edited(root, rel, base, theirs, ours, mode, force, verb, taken, changes, conflicts, notes)

    new_state = None
    if records:
        new_state = State(tool=__version__, target={"flavour": target.flavour, "version": target.version},
                          recipes=recipes, files=records, dirs=_created_dirs(root, records, old))
    transition = Transition(target=target, old=old, new=new_state, changes=changes, conflicts=conflicts, notes=notes)
    transition.ops = _ops(root, old, new_state, changes, originals, versions)
    return transition


def _edited(root: Path, rel: str, base: bytes | None, theirs: bytes | None, ours: bytes | None, mode: int | None,
            force: bool, verb: str, taken: set[str], changes: list[Change], conflicts: list[Conflict],
            notes: list[str]) -> None:
    """A file the user changed since yolopatch wrote it: leave it, merge it, or report the conflict."""
    if theirs == ours:
        return
    if ours is not None and ours == base:
        state = "deleted" if theirs is None else "as you edited it"
        notes.append(f"left {rel} {state} (this run does not change yolopatch's version of it)")
        return
    if ours is None:  # yolopatch created it and would now delete it: the user's bytes stay, as the user's file
        if theirs is not None:
            notes.append(f"kept {rel}: you edited it after yolopatch created it, so it stays as your file "
                         "(no longer tracked; delete it yourself if you do not need it)")
        return
    if theirs is None:
        if force:
            changes.append(Change(rel, None, ours, mode, note="you had deleted it"))
        else:
            conflicts.append(Conflict(rel, "was deleted since yolopatch wrote it", None))
        return
    from .merge import merge  # only for edited files: merge3 stays out of every other run's start-up

    if base is None:
        reason = ("was changed since yolopatch wrote it, and the state folder (from an older yolopatch) does not "
                  "keep yolopatch's version to merge with")
        preview = theirs
    else:
        merged = merge(base, theirs, ours, rel)
        if merged.clean:
            changes.append(Change(rel, theirs, merged.content, mode, note="your edits merged in"))
            return
        reason = (f"merging your edits with yolopatch's changes gives invalid Python ({merged.invalid_python})"
                  if merged.invalid_python else f"your edits at {merged.lines()} overlap yolopatch's changes")
        preview = merged.content
    kept_as = kept_copy_name(root, rel, taken)
    if not force:
        conflicts.append(Conflict(rel, reason, kept_as))
        changes.append(Change(rel, theirs, preview, mode, note=f"CONFLICT: {reason}"))
        return
    taken.add(kept_as)  # the user's copy is written before their file is replaced
    changes.append(Change(kept_as, None, theirs, mode_of(root / rel) or NEW_FILE_MODE, note=f"your version of {rel}"))
    changes.append(Change(rel, theirs, ours, mode, note=f"your version kept as {kept_as}"))
    notes.append(f"{rel}: {reason}; wrote {_forced_version(verb)} and kept yours as {kept_as}")


def conflict_message(conflicts: list[Conflict], verb: str) -> str:
    """One line: which files and lines conflict, that nothing was written, and exactly what --force does."""
    first = conflicts[0]
    text = f"{first.rel}: {first.reason}"
    if len(conflicts) > 1:
        text += f" (and {len(conflicts) - 1} more: {', '.join(c.rel for c in conflicts[1:])})"
    force = f"{verb} with --force to write {_forced_version(verb)}"
    kept = [c.kept_as for c in conflicts if c.kept_as]
    if kept:
        force += f" and keep yours as {kept[0]}" + (" (and likewise beside the others)" if len(kept) > 1 else "")
    preview = " (`--diff` shows the conflict)" if verb == "apply" else ""
    return f"{text}; nothing was written. Merge by hand{preview}, or {force}"


def _forced_version(verb: str) -> str:
    return "the reverted file" if verb == "revert" else "yolopatch's version"


def _created_dirs(root: Path, records: dict[str, FileRecord], old: State | None) -> list[str]:
    """Folders the tool created that hold a file it created: known ones, and the ones this run creates."""
    known = set(old.dirs if old else ())
    dirs: list[str] = []
    for rel, record in records.items():
        if record.kind != "create":
            continue
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in dirs and (folder in known or not (root / folder).is_dir()):
                dirs.append(folder)
    return sorted(dirs, key=lambda d: (d.count("/"), d))


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


# ---------------------------------------------------------------------------------------------------
# from a plan to the list of writes

def _folder_ops(root: Path, writes: list[str], removes: set[str], candidates: list[str]) -> tuple[list[Op], list[Op]]:
    """Folders to create for `writes`, and the `candidates` that are empty once `removes` are gone."""
    create: list[str] = []
    holding: set[str] = set()
    for rel in writes:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            holding.add(folder)
            if folder not in create and not (root / folder).is_dir():
                create.append(folder)
    removable: set[str] = set()
    for folder in sorted(set(candidates), key=lambda d: d.count("/"), reverse=True):
        path = root / folder
        if folder in holding or path.is_symlink() or not path.is_dir():
            continue
        if all(f"{folder}/{name}" in removes or f"{folder}/{name}" in removable for name in os.listdir(path)):
            removable.add(folder)
    mkdirs = [Op("mkdir", d) for d in sorted(create, key=lambda d: d.count("/"))]
    rmdirs = [Op("rmdir", d) for d in sorted(removable, key=lambda d: (-d.count("/"), d))]
    return mkdirs, rmdirs


def _ops(root: Path, old: State | None, new: State | None, changes: list[Change], originals: dict[str, bytes],
         versions: dict[str, bytes]) -> list[Op]:
    """Every write, in order: the state folder's new copies, the tree, the state record, the state cleanup."""
    in_state = manifest.state_rel
    state_writes = [Op("write", in_state("originals", rel), data, 0o644) for rel, data in originals.items()]
    for rel, data in sorted(versions.items()):
        if read_or_none(manifest.written_path(root, rel)) != data:
            state_writes.append(Op("write", in_state("written", rel), data, 0o644))

    state_dir = manifest.state_dir(root)
    existing = sorted(state_dir.rglob("*")) if state_dir.is_dir() else []
    record: list[Op] = []
    if new is None:  # back to pristine: everything in the state folder goes (the journal last, on commit)
        state_removes = {p.relative_to(root).as_posix() for p in existing if not p.is_dir()}
        state_removes.discard(in_state("journal.json"))
    else:
        keep = {in_state("state.json")} | {in_state("written", rel) for rel in new.files}
        keep |= {in_state("originals", rel) for rel, r in new.files.items() if r.kind == "modify"}
        stale = {in_state(sub, rel) for sub in ("originals", "written") for rel in (old.files if old else {})}
        state_removes = {rel for rel in stale - keep if (root / rel).exists()}
        data = new.to_json().encode()
        if read_or_none(state_dir / "state.json") != data:
            record.append(Op("write", in_state("state.json"), data, 0o644))
    state_dirs = [p.relative_to(root).as_posix() for p in existing if p.is_dir()]
    state_mkdirs, state_rmdirs = _folder_ops(root, [op.rel for op in state_writes], state_removes, state_dirs)
    state_mkdirs = [op for op in state_mkdirs if op.rel != manifest.STATE_DIR]  # the writer creates it, journal first

    tree_writes = [Op("write", c.rel, c.after, c.mode) for c in changes if c.after is not None]
    tree_removes = {c.rel for c in changes if c.after is None}
    dropped_dirs = [d for d in (old.dirs if old else []) if new is None or d not in new.dirs]
    tree_mkdirs, tree_rmdirs = _folder_ops(root, [op.rel for op in tree_writes], tree_removes, dropped_dirs)

    ops = state_mkdirs + state_writes + tree_mkdirs + tree_writes
    ops += [Op("remove", rel) for rel in sorted(tree_removes)] + tree_rmdirs + record
    ops += [Op("remove", rel) for rel in sorted(state_removes)] + state_rmdirs
    return ops


def plan_file(root: Path, rel: str, data: bytes) -> list[Op]:
    """The writes for one file outside the patch (yolopatch.lock): nothing if it already holds `data`."""
    path = root / rel
    if read_or_none(path) == data:
        return []
    return [Op("write", rel, data, mode_of(path) or NEW_FILE_MODE)]


def commit(transition: Transition, run: str) -> None:
    if transition.conflicts:  # the caller refuses first; never write conflict markers into a checkout
        raise RefusedError(conflict_message(transition.conflicts, run.split()[0]))
    writer.execute(transition.target.root, transition.ops, run, drop_state_dir=transition.new is None)
