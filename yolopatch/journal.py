"""The write-ahead journal: the before-image of every path a run is about to change, and its replay.

A run lists its writes as operations (write or remove a file, create or remove a folder) and, before the
first of them, writes `.yolopatch/journal.json` holding what each of those paths was: a file's bytes and
mode, a folder, or nothing. Replaying the journal puts every path back as it was, in reverse order, and
touches only paths that differ from their before-image — so it undoes exactly what the run did, never
rewrites a file the run did not reach, and can be repeated after being interrupted itself.

Each entry also records the sha256 of the bytes the run meant to leave. When an interrupted run is
replayed later, a file holding neither its before-image nor the run's bytes was changed by someone since
(the user opened it): its bytes are kept beside it as `<file>.orig` before the before-image goes back.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

from . import __version__, manifest
from .fsio import (RESTORE, atomic_write, kept_copy_name, make_dir, mode_of, read_or_none, remove_dir, remove_file,
                   sha256)

FORMAT = 2   # format 1 (yolopatch 0.1) listed the files without their before-images


@dataclass(frozen=True)
class Op:
    kind: str                # "write" | "remove" | "mkdir" | "rmdir"
    rel: str                 # POSIX path relative to the checkout root
    data: bytes | None = None
    mode: int | None = None


@dataclass(frozen=True)
class Before:
    rel: str
    was: str                 # "file" | "dir" | "absent"
    data: bytes | None = None
    mode: int | None = None
    after: str | None = None  # sha256 of the bytes the run writes there (None: it removes or is a folder)


def capture(root: Path, ops: list[Op]) -> list[Before]:
    images, seen = [], set()
    for op in ops:
        if op.rel in seen:
            continue
        seen.add(op.rel)
        path = root / op.rel
        after = sha256(op.data) if op.kind == "write" and op.data is not None else None
        if path.is_dir() and not path.is_symlink():
            images.append(Before(op.rel, "dir", mode=mode_of(path)))
        elif path.exists() or path.is_symlink():
            images.append(Before(op.rel, "file", read_or_none(path), mode_of(path), after))
        else:
            images.append(Before(op.rel, "absent", after=after))
    return images


def encode(images: list[Before], what: str, created_state_dir: bool) -> bytes:
    payload = {
        "_": manifest.HEADER, "format": FORMAT, "tool": __version__, "run": what,
        "created_state_dir": created_state_dir,
        "before": [{"path": b.rel, "was": b.was, "mode": b.mode, "after_sha256": b.after,
                    "data": None if b.data is None else base64.b64encode(b.data).decode("ascii")} for b in images],
    }
    return (json.dumps(payload, indent=1) + "\n").encode()


@dataclass(frozen=True)
class Recorded:
    run: str
    created_state_dir: bool
    images: list[Before]


def read(root: Path) -> Recorded:
    """The journal left by an interrupted run. Raises ValueError when it cannot be replayed."""
    raw = json.loads(manifest.journal_path(root).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"format {raw.get('format') if isinstance(raw, dict) else '?'} without before-images")
    images = []
    for entry in raw["before"]:
        rel = entry["path"]
        if Path(rel).is_absolute() or ".." in Path(rel).parts or entry["was"] not in ("file", "dir", "absent"):
            raise ValueError(f"bad entry {rel!r}")
        data = None if entry["data"] is None else base64.b64decode(entry["data"])
        images.append(Before(rel, entry["was"], data, entry["mode"], entry.get("after_sha256")))
    return Recorded(str(raw.get("run", "")), bool(raw.get("created_state_dir")), images)


def perform(root: Path, op: Op) -> None:
    path = root / op.rel
    if op.kind == "write":
        atomic_write(path, op.data, op.mode)
    elif op.kind == "remove":
        remove_file(path)
    elif op.kind == "mkdir":
        make_dir(path, op.mode)
    elif op.kind == "rmdir":
        remove_dir(path)
    else:  # pragma: no cover - a bug in the planner
        raise ValueError(f"unknown operation {op.kind}")


def restore(root: Path, images: list[Before], kept: list[str] | None = None) -> tuple[int, list[tuple[str, OSError]]]:
    """Put every path back as its before-image says, last first. Returns (paths changed, failures).
    With `kept` (replaying an interrupted run), bytes that are neither the before-image nor the run's are
    first copied beside the file, and the copy's name is appended to `kept`."""
    changed, failed = 0, []
    for image in reversed(images):
        path = root / image.rel
        try:
            if image.was == "dir":
                if not path.is_dir():
                    make_dir(path, image.mode, phase=RESTORE)
                    changed += 1
                continue
            path.with_name(f".{path.name}.yolopatch-tmp").unlink(missing_ok=True)  # a write cut short
            current = None if path.is_dir() else read_or_none(path)
            if kept is not None and current is not None and current != image.data and sha256(current) != image.after:
                copy = kept_copy_name(root, image.rel)
                atomic_write(root / copy, current, mode_of(path), phase=RESTORE)
                kept.append(copy)
            if image.was == "absent":
                if path.is_dir() and not path.is_symlink():
                    remove_dir(path, phase=RESTORE)
                    changed += 1
                elif path.exists() or path.is_symlink():
                    remove_file(path, phase=RESTORE)
                    changed += 1
            elif current != image.data or mode_of(path) != image.mode:
                atomic_write(path, image.data, image.mode, phase=RESTORE)
                changed += 1
        except OSError as exc:
            failed.append((image.rel, exc))
    return changed, failed


def roll_back(root: Path, images: list[Before], created_state_dir: bool,
              kept: list[str] | None = None) -> tuple[int, list[tuple[str, OSError]]]:
    """Restore the before-images, then remove the journal (and the state folder if the run created it).
    On any failure the journal stays, so that a later `yolopatch revert` can replay it."""
    changed, failed = restore(root, images, kept)
    if failed:
        return changed, failed
    journal, state_dir = manifest.journal_path(root), manifest.state_dir(root)
    try:
        if journal.exists():
            remove_file(journal, phase=RESTORE)
        if created_state_dir and state_dir.is_dir() and not any(state_dir.iterdir()):
            remove_dir(state_dir, phase=RESTORE)
    except OSError as exc:
        where = journal if journal.exists() else state_dir
        failed.append((where.relative_to(root).as_posix(), exc))
    return changed, failed
