"""`yolopatch add` on look-alike checkouts: roles read from each tutorial file, imports rewritten for the
layout, the local recipe applied, re-added (no-op), updated, locked and reproduced, reverted byte for byte;
and every kind of bad input refused in one line with its exit code and an untouched tree."""

import json
import shutil
from pathlib import Path

import libcst as cst
import pytest

from lookalikes import make_target, tree_snapshot
from yolopatch import targets
from yolopatch.add.infer import decide
from yolopatch.add.layout import checkout_layout
from yolopatch.add.rewrite import RewriteTargetImports, requirements
from yolopatch.add.scan import scan

TUTORIAL = Path(__file__).resolve().parent / "fixtures" / "tutorial"

# What the target's own module files define, enough for resolving imports (and, for the probe, running).
TARGET_CONV = '''\
import torch.nn as nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    pass


class CBAM(nn.Module):  # defined in the package, but not a name parse_model resolves
    pass
'''
TARGET_BLOCKS = "import torch.nn as nn\n\n\nclass C2f(nn.Module):\n    pass\n\n\nclass C3(nn.Module):\n    pass\n"


def checkout(tmp_path: Path, style: str) -> Path:
    """A look-alike checkout whose module files define Conv (a working one), DWConv, C2f and C3."""
    root = make_target(tmp_path / style, style)
    if style.startswith("ul"):
        modules = root / "ultralytics" / "nn" / "modules"
        (modules / "conv.py").write_text(TARGET_CONV)
        (modules / "block.py").write_text(TARGET_BLOCKS)
    else:
        (root / "models" / "common.py").write_text(TARGET_CONV + "\n\n" + TARGET_BLOCKS.split("\n", 1)[1])
    return root


ROLES = {
    "se_block.py": {"SE": ("same-width", False)},
    "cbam_block.py": {"CBAM": ("same-width", False)},             # ChannelAttention, SpatialAttention: helpers
    "eca_block.py": {"ECA": ("same-width", False)},
    "coordatt_block.py": {"CoordAtt": ("block", False)},          # the paper's (inp, oup, reduction)
    "simam_block.py": {"SimAM": ("pass-through", False)},
    "ema_block.py": {"EMA": ("same-width", False)},
    "c2f_se.py": {"C2f_SE": ("block", True)},               # SEGate, BottleneckSE: helpers
    "c3_se.py": {"C3SE": ("block", True)},
    "spdconv.py": {"SPDConv": ("block", False)},
    "convse.py": {"ConvSE": ("block", False)},
    "dysample_up.py": {"DySample": ("upsample", False)},
    "tinynet.py": {"TinyNet": ("backbone", False)},
}


@pytest.mark.parametrize("file", sorted(ROLES))
def test_roles_are_read_from_constructor_and_forward(file):
    found = scan((TUTORIAL / file).read_bytes(), file)
    assert {d.name: (d.role, d.repeats) for d in decide(found, file, {})} == ROLES[file]


def test_every_tutorial_fixture_is_covered():
    assert {p.name for p in TUTORIAL.glob("*.py")} == set(ROLES)


# The import lines of each file after rewriting, per layout (every other line stays as it is).
IMPORTS = {
    "ul-frozenset": {
        "c2f_se.py": ["import torch.nn as nn", "from timm.layers import DropPath",
                      "from ultralytics.nn.modules.block import C2f", "from ultralytics.nn.modules.conv import Conv"],
        "c3_se.py": ["import torch", "import torch.nn as nn", "from ultralytics.nn.modules.block import C3",
                     "from ultralytics.nn.modules.conv import Conv"],
        "spdconv.py": ["import torch", "import torch.nn as nn", "from ultralytics.nn.modules.conv import Conv"],
        "convse.py": ["import torch.nn as nn", "from ultralytics.nn.modules.conv import Conv"],
        "tinynet.py": ["import torch.nn as nn", "from ultralytics.nn.modules.conv import Conv"],
    },
    "v5-master": {
        "c3_se.py": ["import torch", "import torch.nn as nn", "from models.common import C3, Conv"],
        "spdconv.py": ["import torch", "import torch.nn as nn", "from models.common import Conv"],
        "convse.py": ["import torch.nn as nn", "from models.common import Conv"],
        "tinynet.py": ["import torch.nn as nn", "from models.common import Conv"],
    },
}


def import_lines(source: bytes) -> list[str]:
    return [line for line in source.decode().splitlines() if line.startswith(("import ", "from "))]


@pytest.mark.parametrize("style, file", [(s, f) for s, files in IMPORTS.items() for f in files])
def test_target_imports_are_rewritten_for_the_layout(tmp_path, style, file):
    root = checkout(tmp_path, style)
    source = (TUTORIAL / file).read_bytes()
    edit = RewriteTargetImports(checkout_layout(targets.detect(root)))
    rewritten = edit.apply(cst.parse_module(source), file).bytes
    assert import_lines(rewritten) == IMPORTS[style][file]
    # only the import lines changed
    assert [l for l in rewritten.decode().splitlines() if not l.startswith(("import ", "from "))] == \
        [l for l in source.decode().splitlines() if not l.startswith(("import ", "from "))]
    assert edit.apply(cst.parse_module(rewritten), file).bytes == rewritten  # a second pass is a no-op


def test_third_party_imports_become_requirements():
    assert requirements((TUTORIAL / "c2f_se.py").read_bytes()) == ["timm"]
    assert requirements(b"import cv2\nfrom einops import rearrange\nimport os\nimport torch\nfrom .x import y\n") \
        == ["einops", "opencv-python"]


def test_add_applies_re_add_is_a_no_op_a_changed_file_updates_and_revert_is_byte_identical(cli, tmp_path):
    root = checkout(tmp_path, "ul-frozenset")
    pristine = tree_snapshot(root)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(TUTORIAL / "se_block.py", work / "se_block.py")
    code, _, err = cli("add", work / "se_block.py", "--repo", root)
    assert code == 0, err
    tasks = (root / "ultralytics" / "nn" / "tasks.py").read_text()
    assert "from ultralytics.nn.modules.se_block import SE" in tasks
    assert "elif m in {SE}:  # yolopatch: modules that keep the input width" in tasks
    assert (root / "ultralytics" / "nn" / "modules" / "se_block.py").read_bytes() == (work / "se_block.py").read_bytes()
    toml = (root / "yolopatch-recipes" / "se_block" / "recipe.toml").read_text()
    assert 'role = "same-width"' in toml
    added = tree_snapshot(root)

    code, _, err = cli("add", work / "se_block.py", "--repo", root)
    assert code == 0 and "nothing to do" in err
    assert tree_snapshot(root) == added

    (work / "se_block.py").write_text((work / "se_block.py").read_text().replace("ratio=16", "ratio=8"))
    code, _, err = cli("add", work / "se_block.py", "--repo", root)
    assert code == 0, err
    assert b"ratio=8" in (root / "ultralytics" / "nn" / "modules" / "se_block.py").read_bytes()
    assert [r["name"] for r in json.loads(cli("status", "--repo", root, "--json")[1])["recipes"]] == ["se_block"]

    assert cli("revert", "--repo", root)[0] == 0
    assert tree_snapshot(root) == pristine


def test_a_local_recipe_is_shown_locked_and_reproduced_on_a_fresh_copy(cli, tmp_path):
    root = checkout(tmp_path, "v5-master")
    fresh = tmp_path / "fresh"
    shutil.copytree(root, fresh)
    for file in ("c3_se.py", "dysample_up.py"):
        code, _, err = cli("add", TUTORIAL / file, "--repo", root)
        assert code == 0, err
    code, out, _ = cli("show", "c3_se", "--repo", root, "--json")
    assert code == 0 and json.loads(out)["modules"][0] == {
        "name": "C3SE", "role": "block", "file": "c3_se.py", "repeats": True, "channels": [], "strides": []}
    names = [r["name"] for r in json.loads(cli("list", "--json", "--repo", root)[1])]
    assert {"c3_se", "dysample_up", "bifpn"} <= set(names)
    assert cli("lock", "--repo", root, "--no-figures")[0] == 0
    # what a user commits: the pristine files, the lock and the local recipes
    shutil.copytree(root / "yolopatch-recipes", fresh / "yolopatch-recipes")
    shutil.copy(root / "yolopatch.lock", fresh / "yolopatch.lock")
    committed = tree_snapshot(fresh)
    code, _, err = cli("apply", "--locked", "--repo", fresh)
    assert code == 0, err
    strip = lambda snap: {k: v for k, v in snap.items() if not k.startswith(".yolopatch")}  # noqa: E731
    assert strip(tree_snapshot(fresh)) == strip(tree_snapshot(root))
    assert cli("revert", "--repo", fresh)[0] == 0
    assert tree_snapshot(fresh) == committed  # the committed recipes stay


def test_a_backbone_is_measured_in_the_target_interpreter(cli, tmp_path):
    root = checkout(tmp_path, "ul-set")
    code, _, err = cli("add", TUTORIAL / "tinynet.py", "--repo", root)
    assert code == 0, err
    toml = (root / "yolopatch-recipes" / "tinynet" / "recipe.toml").read_text()
    assert "channels = [16, 32, 64, 128]\nstrides = [4, 8, 16, 32]" in toml
    assert (root / "ultralytics" / "cfg" / "models" / "yolopatch" / "yolov8-tinynet.yaml").is_file()
    tasks = (root / "ultralytics" / "nn" / "tasks.py").read_text()
    assert "elif m in {TinyNet}:" in tasks and "claim_backbone_rows(m_, ch, layers, args)" in tasks


def test_role_option_overrides_the_reading_and_helper_keeps_a_class_out(cli, tmp_path):
    root = checkout(tmp_path, "ul-tuple")
    code, _, err = cli("add", TUTORIAL / "coordatt_block.py", "--role", "CoordAtt=same-width", "--role", "HSwish=helper",
                       "--repo", root)
    assert code == 0, err
    toml = (root / "yolopatch-recipes" / "coordatt_block" / "recipe.toml").read_text()
    assert 'name = "CoordAtt"' in toml and 'role = "same-width"' in toml and "HSwish" not in toml


AMBIGUOUS = b'''\
import torch.nn as nn


class Gate(nn.Module):
    def __init__(self, k_size=3, channels=64):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k_size, padding=k_size // 2)

    def forward(self, x):
        return x
'''


def test_an_ambiguous_class_is_refused_with_its_signature_and_the_role_to_pass(cli, tmp_path):
    root = checkout(tmp_path, "ul-frozenset")
    (tmp_path / "gate.py").write_bytes(AMBIGUOUS)
    before = tree_snapshot(root)
    code, _, err = cli("add", tmp_path / "gate.py", "--repo", root)
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert "Gate(k_size=3, channels=64)" in err and "--role Gate=ROLE" in err and "same-width" in err
    assert tree_snapshot(root) == before
    assert cli("add", tmp_path / "gate.py", "--role", "Gate=pass-through", "--repo", root)[0] == 0


MARKER = "ADDED_FILE_RAN"
BAD = {
    "does not parse": (b"class SE(nn.Module:\n    pass\n", [], 3, "does not parse as Python"),
    "no module class": (b"import torch\n\nx = 1\n\n\nclass Helper:\n    pass\n", [], 3, "defines no nn.Module subclass"),
    "a name parse_model resolves": (b"import torch.nn as nn\n\n\nclass Conv(nn.Module):\n"
                                    b"    def __init__(self, c1, c2):\n        super().__init__()\n",
                                    [], 3, "Conv is already a name parse_model resolves"),
    "--role for an unknown class": ((TUTORIAL / "se_block.py").read_bytes(), ["--role", "Nope=block"], 2, "Nope"),
    "--role with an unknown role": ((TUTORIAL / "se_block.py").read_bytes(), ["--role", "SE=attention"], 2,
                                    "unknown role 'attention'"),
    "--role without =": ((TUTORIAL / "se_block.py").read_bytes(), ["--role", "SE"], 2, "CLASS=ROLE"),
    "a name taken by a shipped recipe": ((TUTORIAL / "se_block.py").read_bytes(), ["--name", "bifpn"], 3,
                                         "recipe name 'bifpn' is taken"),
    "a module file the target has": ((TUTORIAL / "se_block.py").read_bytes(), ["--name", "conv"], 3,
                                     "ultralytics/nn/modules/conv.py already exists"),
    "an unresolvable target import": (b"import torch.nn as nn\nfrom .conv import Conv, NotThere\n\n\n"
                                      b"class X(nn.Module):\n    def __init__(self, c1):\n        super().__init__()\n",
                                      [], 3, "imports NotThere from .conv"),
    "a bad --name": ((TUTORIAL / "se_block.py").read_bytes(), ["--name", "Bad Name"], 2, "--name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(cli, tmp_path, case):
    source, options, exit_code, fragment = BAD[case]
    root = checkout(tmp_path, "ul-frozenset")
    (tmp_path / "module.py").write_bytes(source)
    before = tree_snapshot(root)
    code, out, err = cli("add", tmp_path / "module.py", *options, "--repo", root)
    assert code == exit_code, err
    assert fragment in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert tree_snapshot(root) == before


def test_a_missing_path_is_a_usage_error(cli, tmp_path):
    root = checkout(tmp_path, "v5-list")
    before = tree_snapshot(root)
    code, _, err = cli("add", tmp_path / "nowhere.py", "--repo", root)
    assert code == 2 and "nowhere.py: no such file" in err and len(err.strip().splitlines()) == 1
    assert tree_snapshot(root) == before


def test_code_at_module_level_is_never_run_by_add(cli, tmp_path):
    root = checkout(tmp_path, "ul-set")
    marker = tmp_path / MARKER
    source = (TUTORIAL / "se_block.py").read_text() + f"\nopen({str(marker)!r}, 'w').write('ran')\nraise SystemExit(9)\n"
    (tmp_path / "se_side_effects.py").write_text(source)
    code, _, err = cli("add", tmp_path / "se_side_effects.py", "--repo", root)
    assert code == 0, err
    assert not marker.exists()


def test_a_package_name_parse_model_does_not_see_is_free(cli, tmp_path):
    """The look-alike's conv.py defines CBAM, but tasks.py does not import it: an added CBAM is fine."""
    root = checkout(tmp_path, "ul-frozenset")
    code, _, err = cli("add", TUTORIAL / "cbam_block.py", "--repo", root)
    assert code == 0, err
    assert "from ultralytics.nn.modules.cbam_block import CBAM" in (root / "ultralytics" / "nn" / "tasks.py").read_text()


def test_a_file_name_that_is_no_identifier_still_gives_an_importable_module(cli, tmp_path):
    root = checkout(tmp_path, "v5-set")
    shutil.copy(TUTORIAL / "eca_block.py", tmp_path / "3d-eca.py")
    code, _, err = cli("add", tmp_path / "3d-eca.py", "--repo", root)
    assert code == 0, err
    assert "from models.m_3d_eca import ECA" in (root / "models" / "yolo.py").read_text()
    compile((root / "models" / "yolo.py").read_text(), "yolo.py", "exec")


def test_dry_run_and_diff_write_nothing(cli, tmp_path):
    root = checkout(tmp_path, "ul-set")
    before = tree_snapshot(root)
    code, out, err = cli("add", TUTORIAL / "ema_block.py", "--repo", root, "--diff")
    assert code == 0 and "yolopatch-recipes/ema_block/recipe.toml" in out and "ultralytics/nn/modules/ema_block.py" in out
    assert cli("add", TUTORIAL / "ema_block.py", "--repo", root, "--dry-run")[0] == 0
    assert tree_snapshot(root) == before
