"""Multi-GPU (DDP) training and the checkout it should import.

ultralytics before 8.4.140 launches its DDP workers with `python -m torch.distributed.run` on a temporary
script it writes into its settings folder (utils/dist.py, generate_ddp_file), and that script imports the
trainer class by module path. A worker's sys.path is the script's folder, PYTHONPATH and site-packages: not
the folder training was started from. So unless the checkout is installed (editable) or on PYTHONPATH, the
workers import another copy of ultralytics, or none, and cannot build or unpickle the new modules; a
single-GPU run from the same folder works. From 8.4.140 the script carries the launching process's sys.path
(and the trainer pickled with cloudpickle), so the workers import what the launcher imported.
"""

from __future__ import annotations

from pathlib import Path

from .run_hint import import_hint
from .targets import Target

SYS_PATH_COPIED_IN = (8, 4, 140)   # the first ultralytics whose DDP script restores the launcher's sys.path


def workers_import_by_path(target: Target) -> bool:
    """Does this target's DDP launcher make its workers import the package from their own sys.path?"""
    return target.family == "ultralytics" and target.version_tuple != (0,) and \
        target.version_tuple < SYS_PATH_COPIED_IN


def worker_note(target: Target) -> str:
    """What happens to DDP workers of this target when `import ultralytics` outside the checkout loads
    another copy (verify adds that copy's location); "" when the launcher is not affected."""
    if not workers_import_by_path(target):
        return ""
    return (f"ultralytics {target.version} starts multi-GPU (DDP) workers from a temporary script in its settings "
            "folder that imports the trainer by module path (releases before 8.4.140 do), so even a run started "
            "from the checkout gives its workers the copy that `import ultralytics` finds outside it")


def worker_problems(target: Target, loads: str | None, package_folder: Path) -> list:
    """doctor: [the line saying DDP workers would load `loads` (None: nothing) instead of the checkout's
    package folder, with the fix], or [] when they load the checkout or the launcher is not affected."""
    if not workers_import_by_path(target) or (loads and Path(loads).resolve() == package_folder.resolve()):
        return []
    return [f"{worker_note(target)} ({loads or 'none'}), not the patched checkout; {import_hint(target)}"]
