"""Bad input and hostile recipes: a clear one-line error, the documented exit code, no traceback, and an
untouched tree — in every case."""

import json
import shutil
import subprocess
import sys

import pytest

from lookalikes import FIXTURE_RECIPES, make_target, tree_snapshot
from yolopatch import runlock


def run(*args):
    """The CLI in a subprocess, the way a user runs it."""
    return subprocess.run([sys.executable, "-m", "yolopatch", *map(str, args)], capture_output=True, text=True)


def assert_refused(result, code, *fragments):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture
def target(tmp_path):
    return make_target(tmp_path / "repo", "ul-frozenset")


def user_recipe(tmp_path, edit_toml=None, name="mine"):
    """A copy of the toy recipe under a new name in its own folder, optionally with recipe.toml edited."""
    folder = tmp_path / "user-recipes" / name
    shutil.copytree(FIXTURE_RECIPES / "toy", folder)
    toml = (folder / "recipe.toml").read_text().replace('name = "toy"', f'name = "{name}"')
    toml = toml.replace('"yolov8-toy"', f'"yolov8-{name}"').replace('"rtdetr-toy"', f'"rtdetr-{name}"')
    toml = toml.replace('"yolov5s-toy"', f'"yolov5s-{name}"').replace("ToyBackbone", "MineBackbone")
    toml = toml.replace("ToyBlock", "MineBlock").replace("ToyFusion", "MineFusion")
    (folder / "toy.py").rename(folder / "mine.py")
    source = (folder / "mine.py").read_text().replace("class Toy", "class Mine")
    (folder / "mine.py").write_text(source)
    toml = toml.replace('"toy.py"', '"mine.py"')
    (folder / "recipe.toml").write_text(edit_toml(toml) if edit_toml else toml)
    return folder.parent


def test_a_user_recipe_applies_and_reverts(target, tmp_path):
    before = tree_snapshot(target)
    recipes = user_recipe(tmp_path)
    assert run("--recipes-dir", recipes, "apply", "mine", "--repo", target).returncode == 0
    assert run("revert", "--repo", target).returncode == 0  # a full revert needs no recipe definitions
    assert tree_snapshot(target) == before


def test_recipe_that_does_not_support_the_target(target, tmp_path):
    recipes = user_recipe(tmp_path, lambda t: t.replace('targets = ["yolov5", "ultralytics"]', 'targets = ["yolov5"]'))
    before = tree_snapshot(target)
    assert_refused(run("--recipes-dir", recipes, "apply", "mine", "--repo", target), 3, "does not support ultralytics",
                   "supports yolov5")
    assert tree_snapshot(target) == before


@pytest.mark.parametrize("content, message", [
    (b"x = '\xff\xfe'\n", "not valid UTF-8"),
    (b"def parse_model(:\n", "does not parse"),
])
def test_target_file_not_utf8_or_not_python(target, content, message):
    (target / "ultralytics" / "nn" / "tasks.py").write_bytes(content)
    before = tree_snapshot(target)
    assert_refused(run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target), 3, message)
    assert tree_snapshot(target) == before


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_text("{not json"), "corrupt"),
    (lambda p: p.write_bytes(p.read_bytes()[:40]), "corrupt"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format": 99})), "newer yolopatch"),
])
def test_damaged_state_folder(target, damage, message):
    assert run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target).returncode == 0
    damage(target / ".yolopatch" / "state.json")
    before = tree_snapshot(target)
    for command in ("apply", "revert"):
        args = ["--recipes-dir", FIXTURE_RECIPES, command] + (["toy"] if command == "apply" else []) + ["--repo", target]
        assert_refused(run(*args), 3, message)
    assert tree_snapshot(target) == before


def test_missing_backup(target):
    run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target)
    (target / ".yolopatch" / "originals" / "ultralytics" / "nn" / "tasks.py").unlink()
    before = tree_snapshot(target)
    assert_refused(run("revert", "--repo", target), 3, "original of ultralytics/nn/tasks.py is missing")
    assert tree_snapshot(target) == before


def test_an_edited_generated_yaml_is_kept_by_revert_as_the_users_file(target):
    pristine = tree_snapshot(target)
    run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target)
    yaml = target / "ultralytics" / "cfg" / "models" / "yolopatch" / "yolov8-toy.yaml"
    tuned = yaml.read_bytes() + b"# tuned\n"
    yaml.write_bytes(tuned)
    result = run("revert", "--repo", target)
    assert result.returncode == 0, result.stderr
    assert "kept ultralytics/cfg/models/yolopatch/yolov8-toy.yaml" in result.stderr
    after = tree_snapshot(target)
    assert yaml.read_bytes() == tuned
    kept = {"ultralytics/cfg/models/yolopatch", "ultralytics/cfg/models/yolopatch/yolov8-toy.yaml"}
    assert {k: v for k, v in after.items() if k not in kept} == pristine
    assert run("revert", "--repo", target).returncode == 0  # nothing applied any more: a no-op
    assert tree_snapshot(target) == after


@pytest.mark.parametrize("edit, message", [
    (lambda t: t + "\n[[[broken", "does not parse"),
    (lambda t: t.replace('vars = { backbone = "MineBackbone", args = [] }', "vars = { }", 1), "template"),
    (lambda t: t.replace('source = "mine.py"', 'source = "../toy/toy.py"'), "inside the recipe folder"),
    (lambda t: t.replace('source = "mine.py"', 'source = "/etc/hostname"'), "inside the recipe folder"),
    (lambda t: t.replace('name = "yolov8-mine"', 'name = "../../../escape"'), "yaml name"),
    (lambda t: t.replace('template = "ultralytics/backbone.yaml.j2"', 'template = "../../etc/passwd"', 1), "template"),
    (lambda t: t.replace('name = "MineBlock"', 'name = "os.system"'), "not a Python identifier"),
])
def test_bad_or_hostile_user_recipes_are_refused(target, tmp_path, edit, message):
    recipes = user_recipe(tmp_path, edit)
    before = tree_snapshot(target)
    assert_refused(run("--recipes-dir", recipes, "apply", "mine", "--repo", target), 3, message)
    assert tree_snapshot(target) == before


@pytest.mark.parametrize("template, message", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}\n", "unsafe"),
    ("{{ no_such_variable }}\n", "undefined"),
])
def test_user_templates_render_sandboxed_and_strict(target, tmp_path, template, message):
    recipes = user_recipe(tmp_path, lambda t: t.replace('template = "ultralytics/backbone.yaml.j2"',
                                                      'template = "mine/hostile.yaml.j2"', 1))
    (recipes / "mine" / "templates" / "mine").mkdir(parents=True)
    (recipes / "mine" / "templates" / "mine" / "hostile.yaml.j2").write_text(template)
    before = tree_snapshot(target)
    assert_refused(run("--recipes-dir", recipes, "apply", "mine", "--repo", target), 3, message)
    assert tree_snapshot(target) == before


def test_symlinked_module_folder_leading_outside_is_refused(target, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    modules = target / "ultralytics" / "nn" / "modules"
    shutil.rmtree(modules)
    modules.symlink_to(outside, target_is_directory=True)
    before = tree_snapshot(target)
    assert_refused(run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target), 3, "outside the checkout")
    assert tree_snapshot(target) == before
    assert list(outside.iterdir()) == []


def test_concurrent_run_is_refused(target):
    before = tree_snapshot(target)
    with runlock.exclusive(target.resolve()):
        assert_refused(run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target), 3, "another yolopatch run")
    assert tree_snapshot(target) == before
    assert run("--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target).returncode == 0


def test_verbose_shows_the_traceback(target):
    (target / "ultralytics" / "nn" / "tasks.py").write_bytes(b"def parse_model(:\n")
    result = run("-v", "--recipes-dir", FIXTURE_RECIPES, "apply", "toy", "--repo", target)
    assert result.returncode == 3 and "Traceback" in result.stderr
