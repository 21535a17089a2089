"""Before the first write: can this process make every change a run plans? Refuse, naming the path, if not.

Creating, replacing or deleting a file needs write and search access to its folder (files are replaced by
rename); replacing a file the user marked read-only is refused too. Creating a folder needs the nearest
existing ancestor writable. The kernel answers for the effective user (os.access with effective_ids), so
ACLs, read-only mounts and root without CAP_DAC_OVERRIDE are all judged as the writes would be.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RefusedError
from .fsio import nearest_existing, writable_file, writable_folder
from .journal import Op


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError, AttributeError):  # pragma: no cover - no pwd entry / not POSIX
        return "this user"


def _shown(root: Path, path: Path) -> str:
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
    return str(root) if rel == "." else rel


def check(root: Path, ops: list[Op]) -> None:
    """Raise RefusedError (exit 3) for the first path this process cannot change."""
    checked: dict[Path, bool] = {}

    def folder_ok(folder: Path) -> Path | None:
        folder = nearest_existing(folder)
        if folder not in checked:
            checked[folder] = folder.is_dir() and writable_folder(folder)
        return None if checked[folder] else folder

    for op in ops:
        path = root / op.rel
        blocked = folder_ok(path if op.kind == "mkdir" else path.parent)
        if blocked is not None:
            raise RefusedError(f"cannot write in {_shown(root, blocked)}/ (not writable by {_user()}), needed for "
                               f"{op.rel}; nothing was written")
        if op.kind == "write" and path.is_file() and not writable_file(path):
            raise RefusedError(f"{op.rel} is read-only for {_user()}; make it writable or leave it out; "
                               "nothing was written")
