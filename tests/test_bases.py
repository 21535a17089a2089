"""`yolopatch bases` and `apply --base` on look-alike checkouts: the listing, derived YAMLs through the
engine (diff, revert, state record, re-planning when other recipes come and go, the lock), and refusals
that leave the tree untouched."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from derive_lookalikes import DERIVE_RECIPES, make_derive_target
from lookalikes import FIXTURE_RECIPES, tree_snapshot

CFG = "ultralytics/cfg/models/yolopatch"


@pytest.fixture
def run(capsys):
    """The CLI in-process with the derivation test recipes: (exit code, stdout, stderr)."""
    from yolopatch.cli import main

    def call(*args):
        try:
            main(["--recipes-dir", str(DERIVE_RECIPES), *map(str, args)])
        except SystemExit as exc:
            captured = capsys.readouterr()
            return exc.code, captured.out, captured.err
        raise AssertionError("main() returned without exiting")

    return call


@pytest.fixture
def target(tmp_path):
    return make_derive_target(tmp_path / "repo")


def state_of(root) -> dict:
    return json.loads((root / ".yolopatch" / "state.json").read_text())


def test_bases_lists_every_stock_config_with_its_task_scales_and_recipes(run, target):
    code, out, _ = run("bases", "--repo", target, "--json")
    assert code == 0
    report = json.loads(out)
    listed = {b["name"]: b for b in report["bases"]}
    assert sorted(listed) == ["toy6-p6", "toy8", "toy8-cls", "toy8-pose", "toy8-world"]
    toy8 = listed["toy8"]
    assert (toy8["path"], toy8["family"], toy8["task"], toy8["scales"]) == (
        "ultralytics/cfg/models/p8/toy8.yaml", "p8", "detect", ["a", "b"])
    assert toy8["recipes"]["toybone"] == {"derives": True, "yaml": "toy8-toybone.yaml"}
    assert listed["toy8-pose"]["task"] == "pose" and listed["toy8-cls"]["task"] == "classify"
    assert listed["toy6-p6"]["scales"] == []
    cls = listed["toy8-cls"]["recipes"]
    assert cls["toybone"]["derives"] and not cls["toyfuse"]["derives"]
    assert "has no neck" in cls["toyneck"]["reason"]
    world = listed["toy8-world"]["recipes"]
    assert not any(r["derives"] for r in world.values())
    assert all("open-vocabulary" in r["reason"] for r in world.values())
    # the shipped recipes are listed too, for this target family
    assert {"mobilenetv4", "slimneck", "bifpn", "toybone"} <= set(report["recipes"])

    code, out, _ = run("bases", "--repo", target)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 1 + 5
    assert any(line.startswith("toy8-world") and "none: C2fAttn layer" in line for line in lines)


def test_apply_base_writes_derived_yamls_revert_removes_them(run, target):
    before = tree_snapshot(target)
    code, _, err = run("apply", "toybone", "--base", "toy8", "--repo", target)
    assert code == 0, err
    derived = target / CFG / "toy8-toybone.yaml"
    assert yaml.safe_load(derived.read_text())["backbone"][0] == [-1, 1, "ToyBone", [16]]
    assert state_of(target)["bases"] == ["toy8"]
    assert f"{CFG}/toy8-toybone.yaml" in state_of(target)["files"]
    assert "1 YAML(s) derived from 1 stock config(s)" in err
    # a second apply is a no-op; the derived YAML is not taken for a stock config
    code, _, err = run("apply", "toybone", "--repo", target)
    assert code == 0 and "already applied" in err
    code, _, _ = run("revert", "--repo", target)
    assert code == 0 and tree_snapshot(target) == before


def test_remembered_bases_are_re_planned_when_recipes_come_and_go(run, target):
    run("apply", "toybone", "--base", "toy8", "--repo", target)
    code, _, err = run("apply", "toyneck", "--repo", target)  # no --base: the state remembers toy8
    assert code == 0, err
    names = sorted(p.name for p in (target / CFG).glob("toy8-*.yaml"))
    assert names == ["toy8-toybone-toyneck.yaml", "toy8-toybone.yaml", "toy8-toyneck.yaml"]
    combined = yaml.safe_load((target / CFG / "toy8-toybone-toyneck.yaml").read_text())
    assert combined["backbone"][0][2] == "ToyBone" and combined["head"][2][2] == "ToyCSP"
    code, _, _ = run("revert", "toybone", "--repo", target)
    assert code == 0
    assert sorted(p.name for p in (target / CFG).glob("toy8-*.yaml")) == ["toy8-toyneck.yaml"]
    assert state_of(target)["bases"] == ["toy8"]
    # more bases accumulate
    code, _, err = run("apply", "--base", "toy6-p6", "--repo", target)
    assert code == 0, err
    assert state_of(target)["bases"] == ["toy6-p6", "toy8"]
    assert (target / CFG / "toy6-p6-toyneck.yaml").is_file()


def test_diff_and_dry_run_show_the_derived_yamls_and_write_nothing(run, target):
    before = tree_snapshot(target)
    code, out, _ = run("apply", "toybone", "toyfuse", "--base", "all", "--repo", target, "--diff")
    assert code == 0 and tree_snapshot(target) == before
    for name in ("toy8-toybone", "toy8-toyfuse", "toy8-toybone-toyfuse", "toy6-p6-toybone", "toy8-pose-toyfuse",
                 "toy8-cls-toybone"):
        assert f"+++ b/{CFG}/{name}.yaml" in out
    assert "toy8-cls-toyfuse" not in out and "toy8-world" not in out
    code, _, err = run("apply", "toybone", "--base", "all", "--repo", target, "--dry-run")
    assert code == 0 and f"{CFG}/toy8-pose-toybone.yaml" in err and tree_snapshot(target) == before


def test_all_skips_pairs_that_do_not_derive_and_says_how_many(run, target):
    code, _, err = run("apply", "toyneck", "--base", "all", "--repo", target)
    assert code == 0, err
    assert sorted(p.stem for p in (target / CFG).glob("*.yaml")) == ["toy6-p6-toyneck", "toy8-pose-toyneck",
                                                                    "toy8-toyneck"]
    assert "2 (base, recipe) pair(s) do not derive" in err  # the classifier and the open-vocabulary model


@pytest.mark.parametrize("args, code, message", [
    (["apply", "toybone", "--base", "toy9"], 2, "no stock model config named 'toy9' (did you mean toy8"),
    (["apply", "toyfuse", "--base", "toy8-cls"], 3, "recipe toyfuse does not derive onto toy8-cls"),
    (["apply", "toyfuse", "toyneck", "--base", "toy8-cls"], 3, "has no neck: its Classify row reads the backbone "
                                                                 "directly (nor does toyneck)"),
    (["apply", "toybone", "--base", "toy8-world"], 3, "C2fAttn layer: an open-vocabulary model"),
    (["apply", "--base", "toy8"], 2, "nothing is applied here"),
    (["apply", "toybone", "--locked", "--base", "toy8"], 2, "--locked takes no recipe arguments"),
])
def test_bad_bases_are_refused_and_nothing_is_written(run, target, args, code, message):
    before = tree_snapshot(target)
    got, _, err = run(*args, "--repo", target)
    assert got == code and message in err.strip().splitlines()[-1] and "Traceback" not in err
    assert tree_snapshot(target) == before


def test_a_named_base_takes_the_recipes_that_fit_and_says_which_do_not(run, target):
    code, _, err = run("apply", "toybone", "toyfuse", "--base", "toy8-cls", "--repo", target)
    assert code == 0, err
    assert [p.name for p in (target / CFG).glob("toy8-cls*.yaml")] == ["toy8-cls-toybone.yaml"]
    assert "toyfuse does not derive onto toy8-cls: the model has no neck" in err


def test_a_recipe_without_a_derive_table_is_refused_for_a_named_base(capsys, target):
    from yolopatch.cli import main

    before = tree_snapshot(target)
    with pytest.raises(SystemExit) as exit_:
        main(["--recipes-dir", str(FIXTURE_RECIPES), "apply", "toy", "--base", "toy8", "--repo", str(target)])
    assert exit_.value.code == 3
    assert "recipe toy does not derive onto stock configs: the recipe declares no [derive] table" in capsys.readouterr().err
    assert tree_snapshot(target) == before


def test_the_lock_pins_the_bases_and_apply_locked_reproduces_the_derived_yamls(run, target, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(target, fresh)
    run("apply", "toybone", "toyneck", "--base", "toy8,toy8-pose", "--repo", target)
    code, _, err = run("lock", "--repo", target, "--no-figures")
    assert code == 0, err
    lock_text = (target / "yolopatch.lock").read_text()
    assert '[derive]\nbases = ["toy8", "toy8-pose"]\n' in lock_text
    assert f'"{CFG}/toy8-pose-toybone-toyneck.yaml"' in lock_text
    shutil.copy(target / "yolopatch.lock", fresh / "yolopatch.lock")
    code, _, err = run("apply", "--locked", "--repo", fresh)
    assert code == 0, err
    patched, again = tree_snapshot(target), tree_snapshot(fresh)
    assert {k: v for k, v in patched.items() if "yolopatch" in k and k.endswith(".yaml")} == \
        {k: v for k, v in again.items() if "yolopatch" in k and k.endswith(".yaml")}
    assert state_of(fresh)["bases"] == ["toy8", "toy8-pose"]


def test_yolov5_layout_derives_into_models_and_skips_its_own_files(run, tmp_path):
    root = make_derive_target(tmp_path / "v5", "v5-set")
    before = tree_snapshot(root)
    code, out, _ = run("bases", "--repo", root, "--json")
    assert [b["name"] for b in json.loads(out)["bases"]] == ["toy5s", "toy5-cls"]  # hub/anchors.yaml is no model
    code, _, err = run("apply", "toybone", "--base", "all", "--repo", root)
    assert code == 0, err
    text = (root / "models" / "toy5s-toybone.yaml").read_text()
    assert "\nanchors:\n  - [10, 13, 16, 30, 33, 23]\n" in text and "\ndepth_multiple: 0.33\n" in text  # its dialect
    v5 = yaml.safe_load(text)
    assert v5["anchors"][0] == [10, 13, 16, 30, 33, 23] and v5["head"][-1] == [[13, 16, 19], 1, "Detect", ["nc", "anchors"]]
    assert (root / "models" / "toy5-cls-toybone.yaml").is_file()
    code, out, _ = run("bases", "--repo", root, "--json")
    assert [b["name"] for b in json.loads(out)["bases"]] == ["toy5s", "toy5-cls"]  # its own YAMLs are no bases
    code, _, err = run("apply", "toyneck", "--repo", root)
    assert code == 0 and (root / "models" / "toy5s-toybone-toyneck.yaml").is_file()
    run("revert", "--repo", root)
    assert tree_snapshot(root) == before


def test_verify_selects_the_derived_yamls_of_each_recipe(run, target):
    from yolopatch import manifest, targets
    from yolopatch.verify.selection import select

    code, _, err = run("apply", "toybone", "toyneck", "--base", "toy8", "--base", "toy8-pose", "--repo", target)
    assert code == 0, err
    found = targets.detect(target)
    state = manifest.load(found.root)
    chosen = select(found, state, ["toyneck"], [], (DERIVE_RECIPES,))
    assert sorted(y.path.rsplit("/", 1)[1] for y in chosen.yamls) == [
        "toy8-pose-toybone-toyneck.yaml", "toy8-pose-toyneck.yaml", "toy8-toybone-toyneck.yaml", "toy8-toyneck.yaml"]
    chosen = select(found, state, [], [], (DERIVE_RECIPES,))
    assert len(chosen.yamls) == 6 and {y.source for y in chosen.yamls} == {"toybone", "toyneck"}
    code, out, _ = run("status", "--repo", target, "--json")
    assert json.loads(out)["bases"] == ["toy8", "toy8-pose"]


def test_configs_that_cannot_be_read_are_listed_with_the_reason(run, target):
    folder = target / "ultralytics" / "cfg" / "models" / "p8"
    (folder / "broken.yaml").write_text("nc: 1\nbackbone: [[-1, 1, Conv\nhead: ]]\n")
    (folder / "forward.yaml").write_text("nc: 1\nbackbone:\n  - [1, 1, Conv, [8, 3, 2]]\nhead:\n  - [-1, 1, Classify, [nc]]\n")
    (folder / "fancy.yaml").write_text("nc: 1\nbackbone:\n  - [-1, 1, Fancy, [8]]\nhead:\n  - [-1, 1, Detect, [nc]]\n")
    (folder / "settings.yaml").write_text("lr0: 0.01\n")  # not a model config: not listed
    code, out, _ = run("bases", "--repo", target, "--json")
    listed = {b["name"]: b for b in json.loads(out)["bases"]}
    assert "settings" not in listed
    assert all("does not parse" in r["reason"] for r in listed["broken"]["recipes"].values())
    assert all(r["reason"] == "row 0 is not a [from, repeats, module, args] row"
               for r in listed["forward"]["recipes"].values())
    fancy = listed["fancy"]["recipes"]
    assert "Fancy (stock row 0) is a module yolopatch has no facts for" in fancy["toybone"]["reason"]
    code, _, err = run("apply", "toybone", "--base", "fancy", "--repo", target)
    assert code == 3 and "Fancy (stock row 0) is a module yolopatch has no facts for" in err


# -- p2: a recipe that only derives ----------------------------------------------------------------------
def test_the_p2_recipe_has_no_module_and_derives_a_stride_4_level():
    from yolopatch import recipes

    p2 = recipes.resolve(["p2"])[0]
    assert (p2.modules, p2.files, p2.yamls, p2.derive.kind) == ((), (), (), "p2")


def test_p2_writes_only_derived_yamls_and_leaves_the_parser_file(run, target):
    before = tree_snapshot(target)
    code, _, err = run("apply", "p2", "--repo", target)
    assert code == 2 and "recipe p2 only derives YAMLs from the checkout's stock configs: add --base" in err
    assert tree_snapshot(target) == before
    code, _, err = run("apply", "p2", "--base", "toy8,toy8-cls", "--repo", target)
    assert code == 3 and "recipe p2 does not derive onto toy8-cls" in err and tree_snapshot(target) == before
    code, _, err = run("apply", "p2", "--base", "toy8", "--repo", target)
    assert code == 0, err
    after = tree_snapshot(target)
    changed = sorted(rel for rel in set(before) | set(after) if before.get(rel) != after.get(rel)
                     and not rel.startswith(".yolopatch"))
    assert changed == ["ultralytics/cfg/models/yolopatch", f"{CFG}/toy8-p2.yaml"]
    head = yaml.safe_load((target / CFG / "toy8-p2.yaml").read_text())["head"]
    assert len(head[-1][0]) == 4  # the output row reads P2, P3, P4 and P5
    assert state_of(target)["recipes"][0]["name"] == "p2" and state_of(target)["bases"] == ["toy8"]
    code, _, _ = run("revert", "--repo", target)
    assert code == 0 and tree_snapshot(target) == before


@pytest.mark.parametrize("derive_table, message", [
    ("", "declares no [[modules]] and no [loss] edit (a recipe that only derives YAMLs declares a [derive] table)"),
    ('[derive]\nreason = "not yet"\n', "declares no [[modules]] and derives nothing"),
])
def test_a_recipe_without_modules_must_derive_something(tmp_path, derive_table, message):
    from yolopatch.errors import RefusedError
    from yolopatch.recipes import load_recipe

    folder = tmp_path / "yamlonly"
    folder.mkdir()
    (folder / "recipe.toml").write_text(f'name = "yamlonly"\ntargets = ["ultralytics"]\n{derive_table}')
    with pytest.raises(RefusedError, match=re.escape(message)):
        load_recipe(folder)
    (folder / "recipe.toml").write_text('name = "yamlonly"\ntargets = ["ultralytics"]\n[derive]\np2 = true\n')
    assert load_recipe(folder).derive.kind == "p2"


def test_p2_with_other_recipes_and_no_base_is_recorded_and_derives_once_a_base_comes(run, target):
    code, _, err = run("apply", "toyneck", "p2", "--repo", target)
    assert code == 0 and "p2 only derive(s) YAMLs from stock configs" in err
    assert [r["name"] for r in state_of(target)["recipes"]] == ["p2", "toyneck"]
    assert not list((target / CFG).glob("toy8-*.yaml"))
    code, _, err = run("apply", "--base", "toy8", "--repo", target)
    assert code == 0, err
    assert sorted(p.name for p in (target / CFG).glob("toy8-*.yaml")) == [
        "toy8-p2-toyneck.yaml", "toy8-p2.yaml", "toy8-toyneck.yaml"]
