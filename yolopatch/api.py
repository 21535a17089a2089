"""The operations behind the CLI. They return results and raise YolopatchError; they never print."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest, options as recipe_options, recipes as recipe_store, runlock, targets
from .diffs import summary, unified_diff
from .engine import (Change, Transition, commit, conflict_message, edited_files, plan_file, plan_transition,
                     pristine_bytes)
from .errors import RefusedError, UsageError
from .recipes import Recipe
from .writer import clean_state_dir, execute, interrupted_run, recover


@dataclass
class Result:
    message: str
    changes: list[Change] = field(default_factory=list)
    wrote: bool = False
    notes: list[str] = field(default_factory=list)   # user edits merged, copies kept: one line each
    refusal: str | None = None   # a preview (--dry-run / --diff / --check) of a run that would refuse
    hint: str | None = None      # after apply: how to make Python import this checkout

    @property
    def summary_lines(self) -> list[str]:
        return summary(self.changes)

    @property
    def diff(self) -> str:
        return unified_diff(self.changes)


def _recipe_records(recipes: list[Recipe], values: dict[str, dict]) -> list[dict]:
    """What state.json keeps of each applied recipe; `options` only for recipes that declare some."""
    records = []
    for r in sorted(recipes, key=lambda r: r.name):
        record = {"name": r.name, "version": r.version, "hash": r.content_hash()}
        if r.name in values:
            record["options"] = dict(values[r.name])
        records.append(record)
    return records


def _remembered_options(state) -> dict[str, dict]:
    return {r["name"]: dict(r.get("options") or {}) for r in (state.recipes if state else [])}


def _refuse_if_interrupted(root: Path) -> None:
    run = interrupted_run(root)
    if run is not None:
        raise RefusedError(f"an earlier yolopatch run on this checkout{f' ({run})' if run else ''} was interrupted; "
                           "run `yolopatch revert` to roll it back and restore the pristine files first")


def _transition_to(target, old, wanted: list[Recipe], force: bool, verb: str,
                   values: dict[str, dict] | None = None, bases=()) -> Transition:
    """`values`: the options of the wanted recipes (default: those remembered in the state, else defaults);
    `bases`: the stock configs to derive YAMLs from (yolopatch.bases)."""
    return _plan(target, old, wanted, force, verb, values, bases)[0]


def _plan(target, old, wanted: list[Recipe], force: bool, verb: str, values=None, bases=(), strict=()):
    """The transition to `wanted`, with YAMLs derived from the stock configs `bases` names (yolopatch.bases);
    also returns what the derivation wrote and skipped (None without bases)."""
    if not wanted:  # back to pristine: saved bytes only, no source edits to load
        return plan_transition(target, old, [], [], force, verb), None
    from . import plan  # the source edits (libcst) load only when something is planned

    if values is None:
        values = recipe_options.resolve(wanted, (), _remembered_options(old))
    derived = None
    if bases:
        from .bases import derived_yamls

        derived = derived_yamls(target, old, wanted, list(bases), tuple(strict))
    planned = plan.build(target, wanted, lambda rel: _pristine_or_missing(target, old, rel), values,
                         derived.files if derived else None)
    return plan_transition(target, old, planned, _recipe_records(wanted, values), force, verb, bases), derived


def _pristine_or_missing(target, old, rel: str) -> bytes:
    data = pristine_bytes(target.root, old, rel)
    if data is None:
        raise RefusedError(f"{rel} is missing from the checkout")
    return data


def apply(repo: Path, names: list[str], mode: str = "write", force: bool = False,
          recipe_dirs: tuple[Path, ...] = (), options: tuple[str, ...] = (), bases: list[str] = ()) -> Result:
    """mode: "write" | "dry-run" | "diff" | "check"; options: `NAME=VALUE` or `RECIPE.NAME=VALUE` for the
    recipes named (the others keep the values they were applied with); bases: stock configs to derive YAMLs
    from (`all`: every one), remembered in the state record with those of earlier runs."""
    if not names and not bases:
        raise UsageError("name at least one recipe (see `yolopatch list`)")
    target = targets.detect(repo)
    recipe_dirs = recipe_store.with_local(recipe_dirs, target.root)
    with runlock.exclusive(target.root):
        requested = recipe_store.resolve(list(dict.fromkeys(names)), recipe_dirs)
        recipe_store.check_supported(requested, target.family)
        _refuse_if_interrupted(target.root)
        old = manifest.load(target.root)
        if not requested and old is None:
            raise UsageError("nothing is applied here: name the recipes to derive YAMLs for")
        already = recipe_store.resolve(old.recipe_names, recipe_dirs) if old else []
        recipe_store.check_exclusive(already, requested)
        wanted = {r.name: r for r in already + requested}
        remembered = _remembered_options(old)
        named = {r.name for r in requested}
        values = recipe_options.resolve([r for r in already if r.name not in named], (), remembered)
        values.update(recipe_options.resolve(requested, tuple(options), remembered))
        from .bases import merge_names

        chosen = merge_names(old.bases if old else [], list(bases))
        derive_only = [] if chosen else _derive_only(requested, target.family)
        strict = [r.name for r in requested or already] if bases else []
        transition, derived = _plan(target, old, list(wanted.values()), force, "apply", values, chosen, strict)
        names_text = ", ".join(sorted(r.name for r in requested or already))
        result = _finish(transition, target, names_text, mode, f"apply {names_text}")
        if derived is not None:
            result.message += _derived_note(derived)
        if derive_only:
            result.message += (f" ({', '.join(derive_only)} only derive(s) YAMLs from stock configs: nothing of "
                               "theirs is written until an apply with --base)")
        return result


def _derive_only(requested: list[Recipe], family: str) -> list[str]:
    """The requested recipes that write nothing of their own (p2: YAMLs derived from stock configs only);
    asking for nothing but those, without --base, is a usage error."""
    found = [r.name for r in requested if not r.modules and r.loss is None and not r.yamls_for(family)]
    if found and len(found) == len(requested):
        raise UsageError(f"recipe {found[0]} only derives YAMLs from the checkout's stock configs: add "
                         "--base NAME (`yolopatch bases` lists them) or --base all")
    return found


def _derived_note(derived) -> str:
    singles = [s for s in derived.skipped if len(s[1]) == 1]
    note = f" ({len(derived.files)} YAML(s) derived from {derived.bases} stock config(s)"
    if len(singles) == 1:
        base, (recipe,), reason = singles[0]
        note += f"; {recipe} does not derive onto {base}: {reason}"
    elif singles:
        note += f"; {len(singles)} (base, recipe) pair(s) do not derive: `yolopatch bases` says why"
    return note + ")"


def _finish(transition: Transition, target, names_text: str, mode: str, run: str) -> Result:
    verb = run.split()[0]
    refusal = conflict_message(transition.conflicts, verb) if transition.conflicts else None
    if transition.is_noop:
        return Result(f"{names_text}: already applied to {target.describe()}; nothing to do")
    if mode != "write":
        return Result(f"{names_text}: {len(transition.changes)} file(s) would change in {target.describe()}",
                      transition.changes, notes=transition.notes, refusal=refusal)
    if refusal:
        raise RefusedError(refusal)
    commit(transition, run)
    from .run_hint import import_hint

    return Result(f"applied {names_text} to {target.describe()}: {len(transition.changes)} file(s) written",
                  transition.changes, wrote=True, notes=transition.notes, hint=import_hint(target))


def apply_locked(repo: Path, mode: str = "write", recipe_dirs: tuple[Path, ...] = ()) -> Result:
    """Apply exactly the set pinned in yolopatch.lock, refusing on any drift before writing anything."""
    from . import __version__, lockfile

    target = targets.detect(repo)
    recipe_dirs = recipe_store.with_local(recipe_dirs, target.root)
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
        recipe_store.check_exclusive([], locked)
        values = recipe_options.resolve(locked, (), {r["name"]: dict(r.get("options") or {}) for r in lock.recipes})
        transition = _transition_to(target, old, locked, False, "apply", values, lock.bases)
        written = transition.new.files if transition.new else {}
        for rel in sorted(set(written) | set(lock.files)):
            got, pinned = (written[rel].sha256 if rel in written else None), lock.files.get(rel)
            if got != pinned:
                what = "is not written by this patch" if got is None else (
                    "is not pinned by the lock" if pinned is None else f"would have sha256 {got[:12]}, the lock pins {pinned[:12]}")
                raise RefusedError(f"{rel} {what}; nothing was written")
        names_text = ", ".join(r.name for r in locked)
        return _finish(transition, target, names_text, mode, "apply --locked")


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
            raise RefusedError(f"{edited[0]} was changed since yolopatch wrote it; a lock pins yolopatch's own bytes, "
                               "so it would not reproduce this checkout (undo those edits or revert, then lock)")
        record = lockfile.Lock(
            tool=__version__,
            target={"flavour": target.flavour, "version": target.version,
                    "git_commit": lockfile.git_commit(target.root)},
            recipes=[{"options": {}, **r} for r in state.recipes],
            files={rel: rec.sha256 for rel, rec in state.files.items()},
            models=models or [],
            bases=list(state.bases),
        )
        execute(target.root, plan_file(target.root, lockfile.LOCK_NAME, record.to_toml().encode()), "lock")
        return target.root / lockfile.LOCK_NAME


def revert(repo: Path, names: list[str] | None = None, force: bool = False,
           recipe_dirs: tuple[Path, ...] = ()) -> Result:
    target = targets.detect(repo)
    recipe_dirs = recipe_store.with_local(recipe_dirs, target.root)
    with runlock.exclusive(target.root):
        rolled_back = None
        if interrupted_run(target.root) is not None:
            restored, kept = recover(target.root)
            rolled_back = f"rolled back the interrupted run ({restored} path(s) restored"
            rolled_back += f"; changed since it was interrupted, so kept beside: {', '.join(kept)})" if kept else ")"
        try:
            result = _revert(target, names, force, recipe_dirs)
        except RefusedError as exc:
            if rolled_back is None:
                raise
            raise RefusedError(f"{rolled_back}, then stopped: {exc}") from None
        if rolled_back:
            result.message = f"{rolled_back}; {result.message}"
            result.wrote = True
        return result


def _revert(target, names, force, recipe_dirs) -> Result:
    old = manifest.load(target.root)
    if old is None:
        clean_state_dir(target.root)
        return Result(f"nothing applied to {target.describe()}; nothing to do")
    applied = old.recipe_names
    names = list(dict.fromkeys(names or []))
    unknown = [n for n in names if n not in applied]
    if unknown:
        raise UsageError(f"{', '.join(unknown)} not applied here (applied: {', '.join(applied)})")
    keep = [n for n in applied if names and n not in names]
    wanted = recipe_store.resolve(keep, recipe_dirs) if keep else []
    transition = _transition_to(target, old, wanted, force, "revert", bases=old.bases)
    if transition.conflicts:
        raise RefusedError(conflict_message(transition.conflicts, "revert"))
    what = ", ".join(names) if names else ", ".join(applied)
    commit(transition, f"revert {what}")
    return Result(f"reverted {what} from {target.describe()}: {len(transition.changes)} file(s) restored",
                  transition.changes, wrote=True, notes=transition.notes)


def status(repo: Path) -> dict:
    target = targets.detect(repo)
    root = target.root
    report = {"target": {"flavour": target.flavour, "family": target.family, "version": target.version,
                         "root": str(root), "parser_file": target.parser_file},
              "interrupted": False, "recipes": [], "bases": [], "files": {}, "edited": []}
    run = interrupted_run(root)
    if run is not None:
        report["interrupted"] = True
        report["interrupted_run"] = run
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
    state = None if interrupted_run(target.root) is not None else manifest.load(target.root)
    return report(target, state, list_recipes(recipe_dirs, target.root))


def list_recipes(recipe_dirs: tuple[Path, ...] = (), repo: Path | None = None) -> list[Recipe]:
    """The shipped recipes, those of --recipes-dir and (with repo) the checkout's own."""
    dirs = recipe_store.with_local(recipe_dirs, repo) if repo is not None else recipe_dirs
    return list(recipe_store.load_all(dirs).values())


def show_recipe(name: str, recipe_dirs: tuple[Path, ...] = (), repo: Path | None = None) -> Recipe:
    dirs = recipe_store.with_local(recipe_dirs, repo) if repo is not None else recipe_dirs
    return recipe_store.resolve([name], dirs)[0]


def applied_options(repo: Path, name: str) -> dict | None:
    """The option values `name` is applied with in the checkout at `repo`; None when it is not applied there
    (or `repo` is not a checkout)."""
    try:
        state = manifest.load(targets.detect(repo).root)
    except RefusedError:
        return None
    record = next((r for r in (state.recipes if state else []) if r["name"] == name), None)
    return dict(record.get("options") or {}) if record else None


def add(repo: Path, file: Path, name: str | None = None, role_options: tuple[str, ...] = (), mode: str = "write",
        python: str | None = None, recipe_dirs: tuple[Path, ...] = ()) -> Result:
    """Make a tutorial's module file a local recipe of the checkout and apply it (see yolopatch/add/)."""
    from .add.compose import compose  # libcst: loaded only when a file is added

    file = Path(file)
    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    target = targets.detect(repo)
    extra = tuple(recipe_dirs)
    with runlock.exclusive(target.root):
        _refuse_if_interrupted(target.root)
        old = manifest.load(target.root)
        with tempfile.TemporaryDirectory(prefix="yolopatch-add-") as scratch:
            recipe, summary = compose(target, old, file, name, role_options, python or sys.executable, extra,
                                      Path(scratch))
            dirs = recipe_store.with_local(extra, target.root)
            already = [r for r in (recipe_store.resolve(old.recipe_names, dirs) if old else []) if r.name != recipe.name]
            transition = _transition_to(target, old, [*already, recipe], False, "apply",
                                        bases=old.bases if old else ())
            result = _finish(transition, target, recipe.name, mode, f"add {recipe.name}")
    if result.message.endswith("nothing to do"):
        return Result(f"{recipe.name}: {file.name} is already added to {target.describe()} as it is; nothing to do")
    return Result(f"{summary}; {result.message}", result.changes, result.wrote, notes=result.notes,
                  refusal=result.refusal, hint=result.hint)
