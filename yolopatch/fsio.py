"""File-system primitives: hashing, reading, atomic writes, access checks, and the fault-injection points
tests use.

YOLOPATCH_FAULT holds one or more comma-separated `<kind>:<N>`:
  fail-write:N    the N-th write of a run (file write, delete, folder create or remove) raises OSError
  kill-write:N    the process exits (137) at the N-th write, as if killed
  fail-restore:N  the N-th write while restoring (rollback of a failed run, recovery of an interrupted
                  one) raises OSError
  kill-restore:N  the process exits at the N-th restoring write
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

FAULT_ENV = "YOLOPATCH_FAULT"
WRITE, RESTORE = "write", "restore"   # the two counted phases
_counts = {WRITE: 0, RESTORE: 0}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def mode_of(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None


def reset_fault_counter() -> None:
    for phase in _counts:
        _counts[phase] = 0


def _fault_point(phase: str | None) -> None:
    """Count a write of `phase`; fail or die at the configured one (for the all-or-nothing tests)."""
    if phase is None:
        return
    _counts[phase] += 1
    for spec in os.environ.get(FAULT_ENV, "").split(","):
        kind, _, number = spec.strip().partition(":")
        action, _, spec_phase = kind.partition("-")
        if spec_phase != phase or not number.isdigit() or int(number) != _counts[phase]:
            continue
        if action == "fail":
            raise OSError(f"injected failure at {phase} {_counts[phase]}")
        if action == "kill":
            os._exit(137)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int | None = None, phase: str | None = WRITE) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over the destination."""
    _fault_point(phase)
    tmp = path.with_name(f".{path.name}.yolopatch-tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode if mode is not None else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def remove_file(path: Path, phase: str | None = WRITE) -> None:
    _fault_point(phase)
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def make_dir(path: Path, mode: int | None = None, phase: str | None = WRITE) -> None:
    _fault_point(phase)
    path.mkdir()
    if mode is not None:
        os.chmod(path, mode)


def remove_dir(path: Path, phase: str | None = WRITE) -> None:
    _fault_point(phase)
    path.rmdir()


# ---------------------------------------------------------------------------------------------------
def writable_folder(folder: Path) -> bool:
    """Can this process create, replace and delete entries in `folder`? Asks the kernel with the effective
    user's credentials (root without CAP_DAC_OVERRIDE, a read-only mount and ACLs are all answered right),
    instead of reading mode bits."""
    flags = os.W_OK | os.X_OK
    if os.access in os.supports_effective_ids:
        return os.access(folder, flags, effective_ids=True)
    return os.access(folder, flags)  # pragma: no cover - platforms without faccessat(AT_EACCESS)


def writable_file(path: Path) -> bool:
    if os.access in os.supports_effective_ids:
        return os.access(path, os.W_OK, effective_ids=True)
    return os.access(path, os.W_OK)  # pragma: no cover


def kept_copy_name(root: Path, rel: str, taken: set[str] = frozenset()) -> str:
    """Where a user's version of `rel` is kept beside it: `<rel>.orig`, or `.orig.1`, `.orig.2` … when taken.
    These copies are the user's: never tracked, never deleted by yolopatch."""
    candidate, n = f"{rel}.orig", 0
    while candidate in taken or os.path.lexists(root / candidate):
        n += 1
        candidate = f"{rel}.orig.{n}"
    return candidate


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
