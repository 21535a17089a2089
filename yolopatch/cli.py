"""Command line: flags in, one call into api, output out. Exit codes are decided in main() only.

0 done or nothing to do · 1 --check found changes · 2 usage · 3 refused (nothing written)
4 verification failed · 5 verification failed and the stock model fails the same way (the environment)
123 internal error (tree restored) · 125 writing failed and restoring failed too (`yolopatch revert` finishes)
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .errors import EXIT_CHECK_WOULD_CHANGE, YolopatchError

repo_option = click.option("--repo", type=click.Path(path_type=Path), default=Path("."), show_default=True,
                           help="The checkout to patch.")


class _CheckWouldChange(Exception):
    pass


def _api():
    """The operations module, imported on first use so `--help` and imports of this module stay fast."""
    from . import api

    return api


def _with_local(recipe_dirs: tuple[Path, ...], repo: Path) -> tuple[Path, ...]:
    """--recipes-dir and the checkout's own recipes (yolopatch-recipes/)."""
    from .recipes import with_local

    return with_local(recipe_dirs, repo)


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="yolopatch")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.option("--recipes-dir", "recipe_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Also load recipes from this folder (repeatable).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, recipe_dirs: tuple[Path, ...]) -> None:
    """Apply published model improvements to a YOLO checkout, verify them, revert exactly."""
    ctx.obj = {"verbose": verbose, "recipe_dirs": recipe_dirs}


local_option = click.option("--repo", type=click.Path(path_type=Path), default=Path("."), show_default=True,
                            help="Also list the recipes this checkout keeps in yolopatch-recipes/.")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@local_option
@click.pass_obj
def list_cmd(obj, as_json: bool, repo: Path) -> None:
    """List the available recipes."""
    recipes = _api().list_recipes(obj["recipe_dirs"], repo)
    if as_json:
        click.echo(json.dumps([_recipe_json(r) for r in recipes], indent=2))
        return
    width = max((len(r.name) for r in recipes), default=0)
    for recipe in recipes:
        click.echo(f"{recipe.name:<{width}}  {', '.join(recipe.targets):<20}  {recipe.summary}")


def _recipe_json(recipe) -> dict:
    return {
        "name": recipe.name, "version": recipe.version, "summary": recipe.summary, "paper": recipe.paper,
        "targets": list(recipe.targets), "requires": list(recipe.requires), "notes": recipe.notes,
        "modules": [{"name": m.name, "role": m.role, "file": m.file, "repeats": m.repeats,
                     "channels": list(m.channels), "strides": list(m.strides)} for m in recipe.modules],
        "yamls": [{"name": y.name, "target": y.target, "template": y.template, "per_backbone": y.per_backbone}
                  for y in recipe.yamls],
        "derive": _derive_json(recipe.derive),
        "figures": recipe.figures(),
        "group": recipe.group,
        "loss": {"function": recipe.loss.function, "rtdetr": recipe.loss.rtdetr} if recipe.loss else None,
        "options": [{"name": o.name, "type": o.type, "default": o.default, "min": o.min, "max": o.max,
                     "choices": list(o.choices), "above": o.above, "doc": o.doc} for o in recipe.options],
    }


def _derive_json(facts) -> dict:
    """What the recipe's [derive] table declares (`apply --base`)."""
    found = {"kind": facts.kind}
    if facts.module:
        found["module"] = facts.module
    if facts.substitutions:
        found["substitute"] = [{"from": list(s.sources), "to": s.module, "within": s.within,
                                **({"stride": s.stride} if s.stride else {})} for s in facts.substitutions]
    if facts.reason:
        found["reason"] = facts.reason
    return found


def _derive_text(facts) -> str:
    if facts.kind == "none":
        return f"no ({facts.reason})"
    if facts.substitutions:
        swaps = "; ".join(f"{' / '.join(s.sources)}{f' (stride {s.stride})' if s.stride else ''} -> {s.module}"
                          for s in facts.substitutions)
        where = "blocks after the stem" if any(s.within == "model" for s in facts.substitutions) else "neck blocks"
        return f"{where} onto stock configs (--base): {swaps}"
    what = {"backbone": "backbone", "fusion": "fusion for the neck's Concat", "insert": "after each head input",
            "upsample": "in place of nn.Upsample", "p2": "a stride-4 detection level"}[facts.kind]
    return f"{facts.module + ' ' if facts.module else ''}{what} onto stock configs (--base)".strip()


@cli.command()
@click.argument("recipe")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@local_option
@click.pass_obj
def show(obj, recipe: str, as_json: bool, repo: Path) -> None:
    """Show a recipe: paper, modules and roles, the YAMLs it writes."""
    found = _api().show_recipe(recipe, obj["recipe_dirs"], repo)
    if as_json:
        click.echo(json.dumps(_recipe_json(found), indent=2))
        return
    click.echo(f"{found.name} {found.version}: {found.summary}")
    click.echo(f"paper:    {found.paper}")
    click.echo(f"targets:  {', '.join(found.targets)}")
    if found.requires:
        click.echo(f"requires: {', '.join(found.requires)}")
    if found.notes:
        click.echo(f"notes:    {found.notes}")
    if found.modules or found.derive.kind != "none":  # a loss-only recipe has nothing to derive
        click.echo(f"derives:  {_derive_text(found.derive)}")
    if found.group:
        click.echo(f"group:    {found.group} (at most one of its recipes is applied to a checkout)")
    if found.loss is not None:
        rtdetr = "and RT-DETR's GIoU term" if found.loss.rtdetr else "(not RT-DETR: see the notes)"
        click.echo(f"edits:    the IoU call of the box loss, yolopatch_iou.{found.loss.function} in place of "
                   f"CIoU {rtdetr}")
    if found.options:
        here = _api().applied_options(repo, found.name)
        click.echo("options (apply --option NAME=VALUE):")
        for o in found.options:
            now = f" (applied here: {here[o.name]})" if here and o.name in here else ""
            click.echo(f"  {o.name:<10} {o.type:<6} default {o.default!s:<6} {o.allowed():<28} {o.doc}{now}")
    if not found.modules and not found.yamls:
        return
    click.echo("modules:")
    for m in found.modules:
        extra = f" channels {list(m.channels)} strides {list(m.strides)}" if m.role == "backbone" else ""
        click.echo(f"  {m.name:<28} {m.role}{' (repeats)' if m.repeats else ''}{extra}")
    figures = {f["yaml"]: f for f in found.figures()}
    if not found.yamls:
        return
    click.echo("yamls (parameters and GFLOPs at 640, measured at the YAML's default scale):")
    for y in found.yamls:
        if y.per_backbone:
            click.echo(f"  {y.name + '.yaml':<32} {y.target:<12} one per applied backbone recipe")
            continue
        f = figures.get(f"{y.name}.yaml")
        measured = f"{f['params']:>12,} params {f['gflops']:>7.2f} GFLOPs  ({f['target']})" if f else ""
        click.echo(f"  {y.name + '.yaml':<32} {y.target:<12} {measured}")


@cli.command()
@click.argument("recipes", nargs=-1)
@repo_option
@click.option("--locked", is_flag=True, help="Apply exactly what yolopatch.lock pins (no recipe arguments).")
@click.option("--dry-run", "mode", flag_value="dry-run", help="Say what would change; write nothing.")
@click.option("--diff", "mode", flag_value="diff", help="Print the patch as a unified diff; write nothing.")
@click.option("--check", "mode", flag_value="check", help="Exit 1 if applying would change files; write nothing.")
@click.option("--force", is_flag=True,
              help="Where your edits conflict with yolopatch's changes, write yolopatch's version and keep yours "
                   "beside it as FILE.orig; replace an existing destination file (revert puts it back).")
@click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
              help="Set a recipe option (`yolopatch show RECIPE` lists them; RECIPE.NAME=VALUE when several "
                   "recipes declare NAME). Repeatable; remembered until changed, pinned by `yolopatch lock`.")
@click.option("--base", "bases", multiple=True, metavar="NAME",
              help="Also derive YAMLs from this stock model config (see `yolopatch bases`; repeatable, "
                   "comma-separated, or `all`).")
@click.pass_obj
def apply(obj, recipes, repo: Path, locked: bool, mode: str | None, force: bool, options, bases) -> None:
    """Apply RECIPES to the checkout (or, with --locked, what yolopatch.lock pins)."""
    bases = [name.strip() for value in bases for name in value.split(",") if name.strip()]
    if locked:
        if recipes or force or options or bases:
            raise click.UsageError("--locked takes no recipe arguments, no --force, no --option and no --base")
        result = _api().apply_locked(repo, mode or "write", obj["recipe_dirs"])
    elif not recipes and not bases:
        raise click.UsageError("name at least one recipe (see `yolopatch list`), or use --locked")
    else:
        result = _api().apply(repo, list(recipes), mode or "write", force, obj["recipe_dirs"], tuple(options),
                              bases)
    if mode == "diff":
        click.echo(result.diff, nl=False)
    else:
        for line in result.summary_lines:
            _say(line)
    _report(result)
    if result.refusal:  # a preview of a run that would refuse: shown above, then refused the same way
        from .errors import RefusedError

        raise RefusedError(result.refusal)
    if mode == "check" and result.changes:
        raise _CheckWouldChange()


def _report(result) -> None:
    for note in result.notes:
        _say(note)
    _say(result.message)
    if result.hint:
        _say(f"to use the patched models, Python must import this checkout: {result.hint}")


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Recipe name (default: from the file name).")
@click.option("--role", "role_options", multiple=True, metavar="CLASS=ROLE",
              help="Give a class its role (backbone, block, same-width, upsample, fusion, pass-through, helper); "
                   "repeatable.")
@repo_option
@click.option("--dry-run", "mode", flag_value="dry-run", help="Say what would change; write nothing.")
@click.option("--diff", "mode", flag_value="diff", help="Print the patch as a unified diff; write nothing.")
@click.option("--python", "python", type=click.Path(dir_okay=False), default=None,
              help="The target's interpreter, for measuring backbones (default: the one running yolopatch).")
@click.pass_obj
def add(obj, file: Path, name, role_options, repo: Path, mode, python) -> None:
    """Make FILE's modules a local recipe of the checkout (yolopatch-recipes/) and apply it."""
    result = _api().add(repo, file, name, tuple(role_options), mode or "write", python, obj["recipe_dirs"])
    if mode == "diff":
        click.echo(result.diff, nl=False)
    else:
        for line in result.summary_lines:
            _say(line)
    _report(result)
    if result.refusal:
        from .errors import RefusedError

        raise RefusedError(result.refusal)


@cli.command()
@click.argument("recipes", nargs=-1)
@repo_option
@click.option("--force", is_flag=True,
              help="Where your edits conflict with the lines yolopatch wrote, write the reverted file and keep "
                   "yours beside it as FILE.orig.")
@click.pass_obj
def revert(obj, recipes, repo: Path, force: bool) -> None:
    """Revert RECIPES (default: everything applied), restoring the original bytes."""
    result = _api().revert(repo, list(recipes), force, obj["recipe_dirs"])
    for line in result.summary_lines:
        _say(line)
    _report(result)


@cli.command()
@repo_option
@click.option("--no-figures", is_flag=True, help="Skip measuring the models (pin file hashes only).")
@click.pass_obj
def lock(obj, repo: Path, no_figures: bool) -> None:
    """Write yolopatch.lock: tool, target, recipes, output hashes and model figures."""
    models = None
    if not no_figures:
        from .verify import lock_figures  # measures every generated YAML with verify --quick

        models = lock_figures(repo, _with_local(obj["recipe_dirs"], repo), progress=_say)
    path = _api().lock(repo, models)
    _say(f"wrote {path}")


@cli.command("bases")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def bases_cmd(obj, repo: Path, as_json: bool) -> None:
    """List the checkout's stock model configs and which recipes derive onto each (`apply --base`)."""
    report = _api().bases(repo, obj["recipe_dirs"])
    if as_json:  # one line: indent=2 would take the pure-Python encoder (66 configs x 26 recipes)
        click.echo(json.dumps(report))
        return
    from .bases import summary

    t, rows = report["target"], report["bases"]
    click.echo(f"{t['flavour']} {t['version']}: {len(rows)} stock model config(s); derived YAMLs go to {t['cfg_dir']}/")
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        scales = "".join(r["scales"]) or "-"
        click.echo(f"{r['name']:<{width}}  {r['family']:<10} {r['task'] or '?':<9} {scales:<6} {summary(r)}")


@cli.command()
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(repo: Path, as_json: bool) -> None:
    """Show the detected target and what is applied."""
    report = _api().status(repo)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    t = report["target"]
    click.echo(f"target:  {t['flavour']} {t['version']} at {t['root']}")
    if report["interrupted"]:
        run = f" ({report['interrupted_run']})" if report.get("interrupted_run") else ""
        click.echo(f"state:   an earlier run{run} was interrupted; `yolopatch revert` rolls it back and restores "
                   "the pristine files")
        return
    names = [r["name"] + _options_text(r.get("options")) for r in report["recipes"]]
    click.echo(f"applied: {', '.join(names) if names else 'nothing'}")
    if report.get("bases"):
        click.echo(f"bases:   {', '.join(report['bases'])} (YAMLs derived from these stock configs)")
    for rel, info in report["files"].items():
        click.echo(f"  {info['state']:<6} {info['kind']:<6} {rel}")


def _options_text(options: dict | None) -> str:
    """` (theta=3.0)`: the options a recipe is applied with, for `status`."""
    return f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""


@cli.command()
@repo_option
@click.option("--python", "python", default=None, help="Interpreter to inspect (default: this one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(repo: Path, python: str | None, as_json: bool) -> None:
    """Which copy of the target Python imports, library versions, and the state folder's health."""
    from .doctor import diagnose

    report = diagnose(repo, python)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        t, imports = report["target"], report["imports"]
        click.echo(f"target:       {t['flavour']} {t['version']} at {t['root']}")
        if "imports_from" in imports:
            editable = {True: " (editable install)", False: " (regular install)"}.get(imports.get("editable"), "")
            click.echo(f"python:       {imports['python']}")
            click.echo(f"imports from: {imports['imports_from']}{editable}")
            versions = ", ".join(f"{k} {v or 'missing'}" for k, v in imports["versions"].items())
            click.echo(f"versions:     {versions}")
        elif "note" in imports:
            click.echo(f"imports:      {imports['note']}")
        else:
            click.echo(f"imports:      could not run the interpreter: {imports.get('error')}")
        click.echo(f"to import it: {report['import_hint']}")
        applied = report["state"]["applied"]
        click.echo(f"applied:      {', '.join(applied) if applied else 'nothing'}")
        for problem in report["problems"]:
            click.echo(f"problem:      {problem}")
        if not report["problems"]:
            click.echo("no problems found")


@cli.command()
@click.option("--recipe", default="mobilenetv4", show_default=True, help="Recipe to demonstrate.")
@click.option("--keep", type=click.Path(path_type=Path), default=None,
              help="Work in this folder and leave the patched copy there.")
def demo(recipe: str, keep: Path | None) -> None:
    """Copy the installed ultralytics package to a scratch folder, apply a recipe, build its YAMLs, revert."""
    from .demo import run_demo

    run_demo(recipe, keep, _say)


@cli.command()
@repo_option
@click.option("--recipe", "recipe_names", multiple=True,
              help="Verify the YAMLs of this applied recipe only (repeatable; default: every applied recipe).")
@click.option("--yaml", "yaml_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Verify this model YAML too (repeatable); works on a checkout patched by hand.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: see README, section verify).")
@click.option("--quick", is_flag=True, help="Only import, names, build, shapes and figures.")
@click.option("--export", type=click.Choice(["onnx"]), default=None,
              help="Also export with the target's exporter and compare onnxruntime with PyTorch.")
@click.option("--python", "python", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The target's interpreter (default: the one running yolopatch).")
@click.option("--one-scale", is_flag=True, help="Only the first scale each YAML declares (faster).")
@click.option("--fit", is_flag=True, help="Also train one epoch with the target's own trainer on a small synthetic "
                                         "dataset, then predict with best.pt in a fresh interpreter.")
@click.option("--locked", is_flag=True, help="Also fail when parameters, GFLOPs (> 0.1) or strides differ from "
                                            "yolopatch.lock.")
@click.option("--shard", default="1/1", show_default=True, metavar="K/N",
              help="Only models K, K+N, K+2N, ... (1-based, in the order verify lists them): one CI job of N.")
@click.pass_obj
def verify(obj, repo: Path, recipe_names, yaml_files, as_json: bool, quick: bool, export, python, one_scale: bool,
           fit: bool, locked: bool, shard: str) -> None:
    """Prove the patched checkout imports, builds, trains a step, reloads and exports (exit 4 on a failure,
    5 when the stock model fails the same way)."""
    from .errors import EnvironmentFailure, VerifyError
    from .verify import lock_mismatches, parse_shard, run_verify  # lazily: verify stays out of other commands

    shard_k_n = parse_shard(shard)
    pinned = None
    if locked:
        from . import lockfile, targets

        pinned = lockfile.read(targets.detect(repo).root).models
    report = run_verify(repo, recipe_names, yaml_files, quick=quick, export=export, python=python,
                        recipe_dirs=_with_local(obj["recipe_dirs"], repo), progress=_say, one_scale=one_scale,
                        shard=shard_k_n, fit=fit)
    click.echo(report.to_json() if as_json else report.table())
    if not report.passed:
        raise (EnvironmentFailure if report.exit_code == 5 else VerifyError)(report.failure_summary())
    if pinned is not None:
        problems = lock_mismatches(report, pinned)
        if problems:
            raise VerifyError(f"figures differ from yolopatch.lock: {problems[0]}"
                              + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def main(argv=None) -> None:
    verbose = "-v" in (argv or sys.argv[1:]) or "--verbose" in (argv or sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="yolopatch", standalone_mode=False)
    except _CheckWouldChange:
        sys.exit(EXIT_CHECK_WOULD_CHANGE)
    except click.exceptions.Abort:
        _say("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except YolopatchError as exc:
        if verbose:
            traceback.print_exc()
        _say(f"error: {exc}")
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug: say so in one line, details with -v
        if verbose:
            traceback.print_exc()
        _say(f"internal error: {exc.__class__.__name__}: {exc} (run with -v for details)")
        sys.exit(123)
    sys.exit(0)
