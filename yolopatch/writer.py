"""Writing a planned list of operations into a checkout, all or nothing, and finishing an interrupted run.

execute   preflight (preflight.py), then the journal of before-images (journal.py), then each write in
          order; the journal's removal is the commit point. On any failure the journal is replayed: exit
          123 when everything was restored, 125 naming what was not (the journal stays for `revert`).
recover   replays the journal an interrupted run left behind.
"""

from __future__ import annotations

from pathlib import Path

from . import journal, manifest, preflight
from .errors import IncompleteRollbackError, InternalError, RefusedError
from .fsio import atomic_write, make_dir, remove_dir, remove_file, reset_fault_counter
from .journal import Op


def execute(root: Path, ops: list[Op], run: str, drop_state_dir: bool = False) -> None:
    """Preflight, journal, write `ops` in order; on failure replay the journal. `run` names the command
    in the journal (status shows it when the run is interrupted)."""
    if not ops:
        return
    state_dir = manifest.state_dir(root)
    journal_rel = manifest.state_rel("journal.json")
    created_state_dir = not state_dir.is_dir()
    preflight.check(root, ([Op("mkdir", manifest.STATE_DIR)] if created_state_dir else []) + [Op("write", journal_rel)]
                    + ops)
    images = journal.capture(root, ops)
    reset_fault_counter()
    try:
        if created_state_dir:
            make_dir(state_dir)
        atomic_write(manifest.journal_path(root), journal.encode(images, run, created_state_dir))
        for op in ops:
            journal.perform(root, op)
        remove_file(manifest.journal_path(root))   # the commit point
    except BaseException as exc:
        _, failed = journal.roll_back(root, images, created_state_dir)
        if failed:
            lead = f"writing failed ({_reason(exc)}), and restoring failed too"
            raise IncompleteRollbackError(_incomplete(root, lead, failed)) from exc
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise InternalError(f"writing failed ({_reason(exc)}); every file was restored to its state before this "
                            "run") from exc
    if drop_state_dir:
        try:  # after the commit point: an empty folder left here holds nothing and the next run removes it
            state_dir.rmdir()
        except OSError:
            pass


def _reason(exc: BaseException) -> str:
    return str(exc) or exc.__class__.__name__


def _incomplete(root: Path, lead: str, failed: list[tuple[str, OSError]]) -> str:
    """`lead` says what failed and ends where the restore failure's reason goes."""
    names = ", ".join(rel for rel, _ in failed)
    kept = (f"; the journal in {manifest.STATE_DIR}/ keeps their previous bytes"
            if manifest.journal_path(root).exists() else "")
    return (f"{lead} ({_reason(failed[0][1])}): {names} {'is' if len(failed) == 1 else 'are'} not restored{kept}. "
            "Fix the cause, then `yolopatch revert` finishes the job (it restores them and reverts the checkout)")


def interrupted_run(root: Path) -> str | None:
    """The command an interrupted run was doing ("" if unknown), or None when no run was interrupted."""
    if not manifest.journal_path(root).exists():
        return None
    try:
        return journal.read(root).run
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def recover(root: Path) -> tuple[int, list[str]]:
    """Replay the journal of an interrupted run: every path it changed gets its before-image back (the
    user's bytes included). A file changed since the run was interrupted is first copied beside itself.
    Returns the number of paths restored and the copies kept."""
    try:
        recorded = journal.read(root)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RefusedError(f"the journal of the interrupted run ({manifest.journal_path(root)}) cannot be replayed "
                           f"({exc}); restore the checkout from version control") from None
    reset_fault_counter()
    preflight.check(root, [Op("write", image.rel) if image.was != "dir" else Op("mkdir", image.rel)
                           for image in recorded.images] + [Op("remove", manifest.state_rel("journal.json"))])
    kept: list[str] = []
    changed, failed = journal.roll_back(root, recorded.images, recorded.created_state_dir, kept)
    if failed:
        lead = f"rolling back the interrupted run ({recorded.run}) failed"
        raise IncompleteRollbackError(_incomplete(root, lead, failed))
    return changed, kept


def clean_state_dir(root: Path) -> bool:
    """Remove a state folder that holds nothing (left after a run that stopped before writing anything):
    only leftover temporary files and empty folders. Returns whether it was removed."""
    folder = manifest.state_dir(root)
    if not folder.is_dir():
        return False
    entries = sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    if any(p.is_file() and not p.name.endswith(".yolopatch-tmp") for p in entries):
        return False
    if not entries:  # nothing to journal: an empty folder holds nothing to restore
        reset_fault_counter()
        preflight.check(root, [Op("rmdir", manifest.STATE_DIR)])
        remove_dir(folder)
        return True
    ops = [Op("remove" if p.is_file() else "rmdir", p.relative_to(root).as_posix()) for p in entries]
    execute(root, ops, "clean up the state folder", drop_state_dir=True)
    return True
