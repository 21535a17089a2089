"""A recipe module may take a name that arrives in the parser file only through a star import and that
parse_model never names (ultralytics 8.0.50's CBAM, from its one modules.py); a name parse_model routes
stays refused."""

from __future__ import annotations

import subprocess
import sys

from lookalikes import make_target, tree_snapshot
from yolopatch.names import names_in_parse_model, resolvable
from yolopatch.plan import _shadowable

COMMON = b"import torch.nn as nn\n\n\nclass CBAM(nn.Module):\n    pass\n\n\nclass C3(nn.Module):\n    pass\n"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "yolopatch", *args], capture_output=True, text=True)


def test_star_imported_name_parse_model_never_names_is_shadowable(tmp_path):
    root = make_target(tmp_path / "repo", "v5-list")
    (root / "models" / "common.py").write_bytes(COMMON)
    source = (root / "models" / "yolo.py").read_bytes()
    taken = resolvable(source, "models/yolo.py", lambda rel: (root / rel).read_bytes() if (root / rel).exists() else None)
    routed = names_in_parse_model(source)
    assert taken["CBAM"].startswith("star-imported") and taken["C3"].startswith("star-imported")
    assert _shadowable("CBAM", taken["CBAM"], routed)
    assert not _shadowable("C3", taken["C3"], routed)          # parse_model routes C3 by name
    assert not _shadowable("make_divisible", taken["make_divisible"], routed)  # imported by name


def test_apply_cbam_over_a_star_imported_cbam_binds_the_recipe_class(tmp_path):
    root = make_target(tmp_path / "repo", "v5-list")
    (root / "models" / "common.py").write_bytes(COMMON)
    before = tree_snapshot(root)
    done = _cli("apply", "cbam", "--repo", str(root))
    assert done.returncode == 0, done.stderr
    lines = (root / "models" / "yolo.py").read_text().splitlines()
    star = next(i for i, line in enumerate(lines) if line.startswith("from models.common import *"))
    ours = next(i for i, line in enumerate(lines) if line.endswith("import CBAM"))
    assert ours > star  # the later binding wins in the parser file's globals
    assert _cli("revert", "--repo", str(root)).returncode == 0
    assert tree_snapshot(root) == before
