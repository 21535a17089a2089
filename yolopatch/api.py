"""The operations behind the CLI. They return results and raise YolopatchError; they never print."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest, recipes as recipe_store, runlock, targets
from .diffs import summary, unified_diff
from .engine import Change, Transition, commit, edited_files, plan_transition, pristine_bytes
from .errors import RefusedError, UsageError
from .fsio import atomic_write, read_or_none, remove_file
from .recipes import Recipe


@dataclass
class Result:
    message: str
    changes: list[Change] = field(default_factory=list)
    wrote: bool = False

    @property
    def summary_lines(self) -> list[str]:
        return summary(self.changes)

    @property
    def diff(self) -> str:
        return unified_diff(self.changes)


def _recipe_records(recipes: list[Recipe]) -> list[dict]:
    return [{"name": r.name, "version": r.version, "hash": r.content_hash()} for r in sorted(recipes, key=lambda r: r.name)]


def _refuse_if_interrupted(root: Path) -> None:
    if manifest.journal_path(root).exists():
        raise RefusedError("an earlier yolopatch run on this checkout was interrupted; run `yolopatch revert` "
                           "to restore the pristine files first")


def _transition_to(target, old, wanted: list[Recipe], force: bool, hint: str = "", bases=()) -> Transition:
    return _plan(target, old, wanted, force, hint, bases)[0]


def _plan(target, old, wanted: list[Recipe], force: bool, hint: str = "", bases=(), strict=()):
    """The transition to `wanted`, with YAMLs derived from the stock configs `bases` names (yolopatch.bases);
    also returns what the derivation wrote and skipped (None without bases)."""
    if not wanted:  # back to pristine: saved bytes only, no source edits to load
        return plan_transition(target, old, [], [], force, hint), None
    from . import plan  # the source edits (libcst) load only when something is planned

    derived = None
    if bases:
        from .bases import derived_yamls

        derived = derived_yamls(target, old, wanted, list(bases), tuple(strict))
    planned = plan.build(target, wanted, lambda rel: _pristine_or_missing(target, old, rel),
                         derived.files if derived else None)
    transition = plan_transition(target, old, planned, _recipe_records(wanted), force, hint)
    if transition.new is not None:
        transition.new.bases = list(bases)
    return transition, derived


def _pristine_or_missing(target, old, rel: str) -> bytes:
    data = pristine_bytes(target.root, old, rel)
    if data is None:
        raise RefusedError(f"{rel} is missing from the checkout")
    return data


def apply(repo: Path, names: list[str], mode: str = "write", force: bool = False,
          recipe_dirs: tuple[Path, ...] = (), bases: list[str] = ()) -> Result:
    """mode: "write" | "dry-run" | "diff" | "check". bases: stock configs to derive YAMLs from (`all`: every
    one), remembered in the state record with those of earlier runs."""
    if not names and not bases:
        raise UsageError("name at least one recipe (see `yolopatch list`)")
    target = targets.detect(repo)
    with runlock.exclusive(target.root):
        requested = recipe_store.resolve(list(dict.fromkeys(names)), recipe_dirs)
        recipe_store.check_supported(requested, target.family)
        _refuse_if_interrupted(target.root)
        old = manifest.load(target.root)
        if not requested and old is None:
            raise UsageError("nothing is applied here: name the recipes to derive YAMLs for")
        already = recipe_store.resolve(old.recipe_names, recipe_dirs) if old else []
        wanted = {r.name: r for r in already + requested}
        from .bases import merge_names

        chosen = merge_names(old.bases if old else [], list(bases))
        strict = [r.name for r in requested or already] if bases else []
        transition, derived = _plan(target, old, list(wanted.values()), force,
                                    "revert with --force to discard those edits, or apply with --force to keep them",
                                    chosen, strict)
        result = _finish(transition, target, ", ".join(sorted(r.name for r in requested or already)), mode)
        if derived is not None:
            result.message += _derived_note(derived)
        return result


def _derived_note(derived) -> str:
    singles = [s for s in derived.skipped if len(s[1]) == 1]
    note = f" ({len(derived.files)} YAML(s) derived from {derived.bases} stock config(s)"
    if len(singles) == 1:
        base, (recipe,), reason = singles[0]
        note += f"; {recipe} does not derive onto {base}: {reason}"
    elif singles:
        note += f"; {len(singles)} (base, recipe) pair(s) do not derive: `yolopatch bases` says why"
    return note + ")"


def _finish(transition: Transition, target, names_text: str, mode: str) -> Result:
    if transition.is_noop:
        return Result(f"{names_text}: already applied to {target.describe()}; nothing to do")
    if mode != "write":
        return Result(f"{names_text}: {len(transition.changes)} file(s) would change in {target.describe()}",
                      transition.changes)
    commit(transition)
    return Result(f"applied {names_text} to {target.describe()}: {len(transition.changes)} file(s) written",
                  transition.changes, wrote=True)


def apply_locked(repo: Path, mode: str = "write", recipe_dirs: tuple[Path, ...] = ()) -> Result:
    """Apply exactly the set pinned in yolopatch.lock, refusing on any drift before writing anything."""
    from . import __version__, lockfile

    target = targets.detect(repo)
    with runlock.exclusive(target.root):
        lock = lockfile.read(target.root)
        if lock.tool != __version__:
            raise RefusedError(f"{lockfile.LOCK_NAME} was written by yolopatch {lock.tool}; this is {__version__}")
        for key in ("flavour", "version"):
            if lock.target.get(key) != getattr(target, key):
                raise RefusedError(f"{lockfile.LOCK_NAME} pins target {key} {lock.target.get(key)!r}, "
                                   f"the checkout has {getattr(target, key)!r}")
        locked = recipe_store.resolve([r["name"] for r in lock.recipes], recipe_dirs)
        for pinned, recipe in zip(lock.recipes, locked):
            if recipe.content_hash() != pinned["hash"]:
                raise RefusedError(f"recipe {recipe.name} changed since the lock (content hash "
                                   f"{pinned['hash'][:12]} -> {recipe.content_hash()[:12]})")
        _refuse_if_interrupted(target.root)
        old = manifest.load(target.root)
        if old and sorted(old.recipe_names) != sorted(r.name for r in locked):
            raise RefusedError(f"the checkout has {', '.join(old.recipe_names)} applied, the lock pins "
                               f"{', '.join(r.name for r in locked)}; revert first")
        transition = _transition_to(target, old, locked, force=False, bases=lock.bases)
        written = transition.new.files if transition.new else {}
        for rel in sorted(set(written) | set(lock.files)):
            got, pinned = (written[rel].sha256 if rel in written else None), lock.files.get(rel)
            if got != pinned:
                what = "is not written by this patch" if got is None else (
                    "is not pinned by the lock" if pinned is None else f"would have sha256 {got[:12]}, the lock pins {pinned[:12]}")
                raise RefusedError(f"{rel} {what}; nothing was written")
        return _finish(transition, target, ", ".join(r.name for r in locked), mode)


def lock(repo: Path, models: list[dict] | None = None) -> Path:
    """Write yolopatch.lock for what is applied now (models: figures measured by verify)."""
    from . import __version__, lockfile

    target = targets.detect(repo)
    with runlock.exclusive(target.root):
        _refuse_if_interrupted(target.root)
        state = manifest.load(target.root)
        if state is None:
            raise RefusedError(f"nothing is applied to {target.describe()}; apply recipes before locking")
        edited = edited_files(target.root, state)
        if edited:
            raise RefusedError(f"{edited[0]} was changed since yolopatch wrote it; the lock would not be reproducible")
        record = lockfile.Lock(
            tool=__version__,
            target={"flavour": target.flavour, "version": target.version,
                    "git_commit": lockfile.git_commit(target.root)},
            recipes=[{**r, "options": {}} for r in state.recipes],
            files={rel: rec.sha256 for rel, rec in state.files.items()},
            models=models or [],
            bases=list(state.bases),
        )
        return lockfile.write(target.root, record)


def revert(repo: Path, names: list[str] | None = None, force: bool = False,
           recipe_dirs: tuple[Path, ...] = ()) -> Result:
    target = targets.detect(repo)
    with runlock.exclusive(target.root):
        if manifest.journal_path(target.root).exists():
            return _recover(target)
        old = manifest.load(target.root)
        if old is None:
            _remove_empty_state_dir(target.root)
            return Result(f"nothing applied to {target.describe()}; nothing to do")
        applied = old.recipe_names
        names = list(dict.fromkeys(names or []))
        unknown = [n for n in names if n not in applied]
        if unknown:
            raise UsageError(f"{', '.join(unknown)} not applied here (applied: {', '.join(applied)})")
        keep = [n for n in applied if names and n not in names]
        wanted = recipe_store.resolve(keep, recipe_dirs) if keep else []
        transition = _transition_to(target, old, wanted, force, hint="revert with --force to discard those edits",
                                    bases=old.bases)
        commit(transition)
        what = ", ".join(names) if names else ", ".join(applied)
        return Result(f"reverted {what} from {target.describe()}: {len(transition.changes)} file(s) restored",
                      transition.changes, wrote=True)


def _remove_empty_state_dir(root: Path) -> None:
    folder = manifest.state_dir(root)
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder)


def _recover(target) -> Result:
    """Finish an interrupted run by restoring every file it may have touched to pristine."""
    root = target.root
    try:
        journal = json.loads(manifest.journal_path(root).read_text(encoding="utf-8"))
        files, modes, dirs = journal["files"], journal.get("original_modes", {}), journal["dirs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RefusedError(f"the journal of the interrupted run is unreadable ({exc}); restore the checkout "
                           "from version control") from None
    restored = []
    for rel, kind in sorted(files.items()):
        path = root / rel
        if kind == "create":
            if path.exists():
                remove_file(path, counted=False)
                restored.append(rel)
            continue
        original = read_or_none(manifest.original_path(root, rel))
        if original is not None and read_or_none(path) != original:
            atomic_write(path, original, modes.get(rel), counted=False)
            restored.append(rel)
    for folder in sorted(dirs, key=len, reverse=True):
        path = root / folder
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    shutil.rmtree(manifest.state_dir(root))
    return Result(f"finished the interrupted run: {len(restored)} file(s) restored; {target.describe()} is pristine",
                  wrote=True)


def status(repo: Path) -> dict:
    target = targets.detect(repo)
    root = target.root
    report = {"target": {"flavour": target.flavour, "family": target.family, "version": target.version,
                         "root": str(root), "parser_file": target.parser_file},
              "interrupted": manifest.journal_path(root).exists(), "recipes": [], "bases": [], "files": {},
              "edited": []}
    if report["interrupted"]:
        return report
    state = manifest.load(root)
    if state is None:
        return report
    report["recipes"] = state.recipes
    report["bases"] = state.bases
    edited = set(edited_files(root, state))
    report["edited"] = sorted(edited)
    report["files"] = {rel: {"kind": rec.kind, "state": "edited" if rel in edited else "ok"}
                       for rel, rec in sorted(state.files.items())}
    return report


def bases(repo: Path, recipe_dirs: tuple[Path, ...] = ()) -> dict:
    """Every stock model config of the checkout and, per recipe, whether it derives onto it (or why not)."""
    from .bases import report

    target = targets.detect(repo)
    state = None if manifest.journal_path(target.root).exists() else manifest.load(target.root)
    return report(target, state, list_recipes(recipe_dirs))


def list_recipes(recipe_dirs: tuple[Path, ...] = ()) -> list[Recipe]:
    return list(recipe_store.load_all(recipe_dirs).values())


def show_recipe(name: str, recipe_dirs: tuple[Path, ...] = ()) -> Recipe:
    return recipe_store.resolve([name], recipe_dirs)[0]
