"""The IoU-loss recipes through the CLI on look-alike checkouts (our own small loss files): one exclusive group,
options validated / remembered / pinned, the loss files written through the engine (byte-exact revert,
user-edit merge), the parser file left alone."""

import json
import re
from pathlib import Path

import pytest

from lookalikes import make_target, tree_snapshot
from yolopatch import options as recipe_options
from yolopatch.edits.loss_call_examples import BBOX_LOSS_84, COMPUTE_LOSS_70, DETR_LOSS
from yolopatch.errors import RefusedError, UsageError
from yolopatch.recipes import load_all, load_recipe

IOU_RECIPES = ("siou", "eiou", "wiou", "mpdiou", "shape-iou", "inner-iou", "focaler-iou")
LOSS = "ultralytics/utils/loss.py"
DETR = "ultralytics/models/utils/loss.py"


def ultralytics_target(tmp_path: Path) -> Path:
    root = make_target(tmp_path / "repo", "ul-frozenset")
    (root / "ultralytics" / "utils").mkdir()
    (root / LOSS).write_text(BBOX_LOSS_84)
    (root / "ultralytics" / "models" / "utils").mkdir(parents=True)
    (root / DETR).write_text(DETR_LOSS)
    return root


def yolov5_target(tmp_path: Path) -> Path:
    root = make_target(tmp_path / "repo", "v5")
    (root / "utils").mkdir()
    (root / "utils" / "loss.py").write_text(COMPUTE_LOSS_70)
    return root


def state(root: Path) -> dict:
    return json.loads((root / ".yolopatch" / "state.json").read_text())


@pytest.mark.parametrize("name", IOU_RECIPES)
def test_each_recipe_applies_and_reverts_byte_identically(cli, tmp_path, name):
    root = ultralytics_target(tmp_path)
    before = tree_snapshot(root)
    recipe = load_all()[name]
    code, out, err = cli("apply", name, "--repo", root)
    assert code == 0, err
    loss = (root / LOSS).read_text()
    assert f"yolopatch_iou.{recipe.loss.function}(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False" in loss
    assert "from . import yolopatch_iou" in loss and "CIoU=True" not in loss
    assert (root / "ultralytics/utils/yolopatch_iou.py").read_bytes() == \
        (Path(__file__).parents[1] / "recipes/_shared/yolopatch_iou.py").read_bytes()
    assert ("GIoU=True" in (root / DETR).read_text()) == (not recipe.loss.rtdetr)
    assert (root / "ultralytics/nn/tasks.py").read_bytes() == before["ultralytics/nn/tasks.py"][1]  # untouched
    assert "ultralytics/nn/tasks.py" not in state(root)["files"]
    assert state(root)["recipes"][0].get("options", {}) == {o.name: o.default for o in recipe.options}
    assert cli("revert", "--repo", root)[0] == 0
    assert tree_snapshot(root) == before


def test_yolov5_call_and_mpdiou_image_size(cli, tmp_path):
    root = yolov5_target(tmp_path)
    assert cli("apply", "mpdiou", "--repo", root)[0] == 0
    loss = (root / "utils" / "loss.py").read_text()
    assert "from utils import yolopatch_iou" in loss
    assert "iou = yolopatch_iou.mpdiou(pbox, tbox[i], xywh=True, image_size=(pi.shape[3], pi.shape[2])).squeeze()" in loss
    assert (root / "utils" / "yolopatch_iou.py").is_file()


def test_a_second_iou_recipe_is_refused_naming_the_applied_one(cli, tmp_path):
    root = ultralytics_target(tmp_path)
    assert cli("apply", "siou", "--repo", root)[0] == 0
    applied = tree_snapshot(root)
    code, _, err = cli("apply", "eiou", "--repo", root)
    assert code == 3 and "eiou cannot join siou, which is applied" in err and "revert siou first" in err
    assert len(err.strip().splitlines()) == 1
    assert tree_snapshot(root) == applied
    # two at once: refused the same way, nothing written
    fresh = ultralytics_target(tmp_path / "two")
    before = tree_snapshot(fresh)
    code, _, err = cli("apply", "wiou", "mpdiou", "--repo", fresh)
    assert code == 3 and "mpdiou cannot join wiou, which is requested too" in err and "apply one of them" in err
    assert tree_snapshot(fresh) == before
    # the same recipe again with another option is not a second one
    assert cli("apply", "siou", "--option", "theta=2.5", "--repo", root)[0] == 0


@pytest.mark.parametrize("option, message", [
    ("theta=7", "siou's theta must be 2.0 to 6.0"),
    ("theta=abc", "siou's theta must be a number, got 'abc'"),
    ("thetaa=3", "no recipe being applied has an option 'thetaa' (options: siou.theta)"),
    ("theta", "expected NAME=VALUE"),
    ("eiou.theta=3", "no recipe being applied has an option 'eiou.theta'"),
    ("theta=nan", "siou's theta must be a finite number"),
])
def test_bad_options_are_usage_errors_and_write_nothing(cli, tmp_path, option, message):
    root = ultralytics_target(tmp_path)
    before = tree_snapshot(root)
    code, _, err = cli("apply", "siou", "--option", option, "--repo", root)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert tree_snapshot(root) == before


def test_cross_option_and_choice_checks(cli, tmp_path):
    root = ultralytics_target(tmp_path)
    before = tree_snapshot(root)
    code, _, err = cli("apply", "focaler-iou", "--option", "d=0.6", "--option", "u=0.5", "--repo", root)
    assert code == 2 and "focaler-iou's u (0.5) must be above its d (0.6)" in err
    code, _, err = cli("apply", "inner-iou", "--option", "base=wiou", "--repo", root)
    assert code == 2 and "base must be one of none, iou, giou" in err
    code, _, err = cli("apply", "wiou", "--option", "half_life=0.5", "--repo", root)
    assert code == 2 and "half_life must be an integer" in err
    assert tree_snapshot(root) == before
    assert cli("apply", "inner-iou", "--option", "base=ciou", "--option", "inner-iou.ratio=1.25", "--repo", root)[0] == 0
    assert 'yolopatch_iou.inner_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, ratio=1.25, base="ciou")' \
        in (root / LOSS).read_text()


def test_options_are_remembered_pinned_and_reapplied_from_the_lock(cli, tmp_path):
    root = ultralytics_target(tmp_path)
    before = tree_snapshot(root)
    assert cli("apply", "wiou", "--option", "alpha=2.5", "--option", "half_life=500", "--repo", root)[0] == 0
    assert state(root)["recipes"][0]["options"] == {"alpha": 2.5, "delta": 3.0, "half_life": 500}
    call = "yolopatch_iou.wiou_v3(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, alpha=2.5, delta=3.0, " \
           "half_life=500)"
    assert call in (root / LOSS).read_text()
    # another option later: the earlier one is kept
    assert cli("apply", "wiou", "--option", "delta=4", "--repo", root)[0] == 0
    assert state(root)["recipes"][0]["options"] == {"alpha": 2.5, "delta": 4.0, "half_life": 500}
    assert "applied: wiou (alpha=2.5, delta=4.0, half_life=500)" in cli("status", "--repo", root)[1]
    assert cli("lock", "--no-figures", "--repo", root)[0] == 0
    lock = (root / "yolopatch.lock").read_text()
    assert re.search(r'name = "wiou"\n.*\n.*\noptions = \{alpha = 2\.5, delta = 4\.0, half_life = 500\}', lock)
    patched = (root / LOSS).read_bytes()
    code, out, _ = cli("show", "wiou", "--repo", root)
    assert code == 0 and "2301.10051" in out and re.search(r"alpha .*default 1\.9 .*\(applied here: 2\.5\)", out)
    assert cli("revert", "--repo", root)[0] == 0
    assert cli("apply", "--locked", "--repo", root)[0] == 0
    assert (root / LOSS).read_bytes() == patched
    assert cli("revert", "--repo", root)[0] == 0
    (root / "yolopatch.lock").unlink()
    assert tree_snapshot(root) == before


def test_a_user_edit_of_the_loss_file_is_merged(cli, tmp_path):
    root = ultralytics_target(tmp_path)
    pristine = (root / LOSS).read_bytes()
    assert cli("apply", "siou", "--repo", root)[0] == 0
    edited = (root / LOSS).read_text().replace("import torch\n", "import torch  # pinned by our team\n")
    (root / LOSS).write_text(edited)
    assert cli("apply", "siou", "--option", "theta=3", "--repo", root)[0] == 0
    merged = (root / LOSS).read_text()
    assert "# pinned by our team" in merged and "theta=3.0)" in merged
    code, _, err = cli("revert", "--repo", root)
    assert code == 0
    assert (root / LOSS).read_bytes() == pristine.replace(b"import torch\n", b"import torch  # pinned by our team\n")


def test_show_says_what_a_recipe_covers(cli):
    code, out, _ = cli("show", "wiou")
    assert code == 0 and "group:    iou-loss" in out and "not RT-DETR" in out and "objectness" in out
    code, out, _ = cli("show", "mpdiou", "--json")
    data = json.loads(out)
    assert data["loss"] == {"function": "mpdiou", "rtdetr": True} and data["options"] == [] and data["modules"] == []
    code, out, _ = cli("show", "focaler-iou", "--json")
    assert [o["name"] for o in json.loads(out)["options"]] == ["d", "u", "base"]


# ---- the loader ----------------------------------------------------------------------------------------------

def write_recipe(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.toml").write_text(f'name = "{folder.name}"\ntargets = ["ultralytics"]\n{body}')
    return folder


SHARED = '[[files]]\nsource = "yolopatch_iou.py"\nshared = true\n'


@pytest.mark.parametrize("body, message", [
    ("", "declares no [[modules]] and no [loss] edit"),
    ('[loss]\nfunction = "siou"\n', "[loss] calls yolopatch_iou.py, which [[files]] must list"),
    (SHARED + '[loss]\nfunction = "no such"\n', "[loss] needs `function`"),
    (SHARED + '[loss]\nfunction = "siou"\nrtdetr = "yes"\n', "rtdetr must be true or false"),
    (SHARED + 'group = "../x"\n[loss]\nfunction = "siou"\n', "group '../x' must be lower-case"),
    (SHARED + '[loss]\nfunction = "siou"\n[options.theta]\ntype = "float"\ndefault = 9.0\nmax = 6.0\n',
     "option theta: default 9.0 must be at most 6.0"),
    (SHARED + '[loss]\nfunction = "siou"\n[options.theta]\ntype = "real"\ndefault = 1.0\n', "type 'real' is not one of"),
    (SHARED + '[loss]\nfunction = "siou"\n[options.base]\ntype = "choice"\ndefault = "x"\n',
     "a choice needs a non-empty list of strings"),
    (SHARED + '[loss]\nfunction = "f"\n[options.u]\ntype = "float"\ndefault = 1.0\nabove = "d"\n',
     "`above` must name an earlier numeric option"),
    (SHARED + '[loss]\nfunction = "f"\n[options.d]\ntype = "float"\ndefault = 0.5\n'
              '[options.u]\ntype = "float"\ndefault = 0.2\nabove = "d"\n', "default 0.2 must be above d's default"),
])
def test_the_loader_refuses_broken_loss_recipes(tmp_path, body, message):
    # keys after a [table] header belong to it: put top-level keys first
    top = "".join(line + "\n" for line in body.splitlines() if line.startswith("group"))
    rest = "\n".join(line for line in body.splitlines() if not line.startswith("group")) + "\n"
    folder = write_recipe(tmp_path / "broken", top + rest)
    with pytest.raises(RefusedError, match=re.escape(message)):
        load_recipe(folder)


def test_shipped_iou_recipes_form_one_group_with_the_issue_defaults():
    recipes = load_all()
    assert {n for n, r in recipes.items() if r.group == "iou-loss"} == set(IOU_RECIPES)
    defaults = {n: {o.name: o.default for o in recipes[n].options} for n in IOU_RECIPES}
    assert defaults == {"siou": {"theta": 4.0}, "eiou": {}, "wiou": {"alpha": 1.9, "delta": 3.0, "half_life": 7000},
                        "mpdiou": {}, "shape-iou": {"scale": 0.0}, "inner-iou": {"ratio": 0.7, "base": "none"},
                        "focaler-iou": {"d": 0.0, "u": 0.95, "base": "none"}}
    # the choices of `base` are exactly the bases the shipped module knows (one list, checked here)
    module = (Path(__file__).parents[1] / "recipes/_shared/yolopatch_iou.py").read_text()
    bases = re.search(r"BASES = \{(.*?)\}", module, re.S).group(1)
    names = set(re.findall(r'"([a-z-]+)":', bases))
    for name in ("inner-iou", "focaler-iou"):
        assert set(next(o for o in recipes[name].options if o.name == "base").choices) == names


def test_resolve_rejects_a_name_two_recipes_declare(tmp_path):
    a = write_recipe(tmp_path / "a", SHARED + '[loss]\nfunction = "f"\n[options.k]\ntype = "int"\ndefault = 1\n')
    b = write_recipe(tmp_path / "b", SHARED + '[loss]\nfunction = "g"\n[options.k]\ntype = "int"\ndefault = 2\n')
    recipes = [load_recipe(a), load_recipe(b)]
    with pytest.raises(UsageError, match="k is an option of a, b; write RECIPE.k=VALUE"):
        recipe_options.resolve(recipes, ("k=3",))
    assert recipe_options.resolve(recipes, ("b.k=3",)) == {"a": {"k": 1}, "b": {"k": 3}}
    with pytest.raises(RefusedError, match="a's option k = 'x' \\(as recorded\\) must be an integer"):
        recipe_options.resolve(recipes, (), {"a": {"k": "x"}})


def test_loss_sites_per_layout(tmp_path):
    from yolopatch.loss_plan import loss_sites
    from yolopatch.targets import Target

    def target(family, modules_dir):
        return Target(root=tmp_path, flavour=family, family=family, version="x", parser_file="", cfg_dir="",
                      modules_dir=modules_dir, import_prefix="", yaml_dialect="")

    present = {"yolov5/utils/loss.py", "utils/loss.py", "ultralytics/yolo/utils/loss.py",
               "ultralytics/models/utils/loss.py"}
    exists = present.__contains__
    assert [(s.key, s.file, s.xywh) for s in loss_sites(target("yolov5", "yolov5/models"), exists)] == \
        [("yolov5", "yolov5/utils/loss.py", True)]
    assert [s.file for s in loss_sites(target("yolov5", "models"), exists)] == ["utils/loss.py"]
    # 8.0.x keeps the losses under ultralytics/yolo/; RT-DETR's only when asked for
    assert [(s.key, s.file, s.xywh) for s in loss_sites(target("ultralytics", "ultralytics/nn"), exists)] == \
        [("ultralytics", "ultralytics/yolo/utils/loss.py", False), ("rtdetr", "ultralytics/models/utils/loss.py", True)]
    assert [s.key for s in loss_sites(target("ultralytics", "ultralytics/nn"), exists, rtdetr=False)] == ["ultralytics"]
