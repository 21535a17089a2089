"""The loss-call edit: every example beside it (exact output, piecewise and whole-file, a second pass is a
no-op, classification, conflicts and their reasons), and the real loss files of the releases."""

import difflib
import sys

import libcst as cst
import pytest

from yolopatch.edits.loss_call import (APPLIED, CONFLICT, PENDING, SITES, IouCall, LossCallEdit, LossEditConflict,
                                       classify_loss_file, edit_loss_file, edit_loss_file_whole,
                                       import_destination)
from yolopatch.edits.loss_call_examples import CONFLICTS, EXAMPLES


def edit_for(site: str, call: IouCall) -> LossCallEdit:
    return LossCallEdit(SITES[site], call)


@pytest.mark.parametrize("name", list(EXAMPLES))
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_example_before_after(name, newline):
    site, call, before, after = EXAMPLES[name]
    before, after = before.replace("\n", newline).encode(), after.replace("\n", newline).encode()
    edit = edit_for(site, call)
    assert edit_loss_file(before, edit, "loss.py") == after
    assert edit_loss_file_whole(before, edit, "loss.py") == after
    assert edit_loss_file(after, edit, "loss.py") == after  # a second pass is a no-op
    assert edit_loss_file_whole(after, edit, "loss.py") == after


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_classification(name):
    site, call, before, after = EXAMPLES[name]
    edit = edit_for(site, call)
    assert edit.classify(cst.parse_module(before)).status == PENDING
    assert edit.classify(cst.parse_module(after)).status == APPLIED
    only_call = edit.edit_call(cst.parse_module(before))  # the import still missing: pending, and apply adds it
    assert edit.classify(only_call).status == PENDING
    assert edit.apply(only_call, "loss.py").code == after


@pytest.mark.parametrize("name", list(CONFLICTS))
def test_conflict_names_the_reason(name):
    site, call, source, reason = CONFLICTS[name]
    edit = edit_for(site, call)
    found = edit.classify(cst.parse_module(source))
    assert found.status == CONFLICT and reason in found.reason, found
    for run in (edit_loss_file, edit_loss_file_whole):
        with pytest.raises(LossEditConflict, match="^my/loss.py: .*" + _escaped(reason) + ".*nothing was written$"):
            run(source.encode(), edit, "my/loss.py")


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_option_values_become_literals():
    call = IouCall("inner_iou", (("ratio", 0.7), ("base", "shape-iou")))
    source = EXAMPLES["ultralytics 8.4 BboxLoss"][2]
    out = edit_loss_file(source.encode(), edit_for("ultralytics", call), "loss.py").decode()
    assert 'yolopatch_iou.inner_iou(pred_bboxes[fg_mask], target_bboxes[fg_mask], xywh=False, ratio=0.7, ' \
           'base="shape-iou")' in out
    with pytest.raises(ValueError, match="cannot be written"):
        IouCall("siou", (("theta", "4); import os #"),))


def test_odd_shapes_fall_back_to_the_whole_file():
    site, call, before, after = EXAMPLES["yolov5 6.2-7.0 ComputeLoss, Wise-IoU"]
    one_line = before.replace("import torch\n", "import torch; import math\n").replace(
        "from utils.metrics import bbox_iou\n", "import os; from utils.metrics import bbox_iou\n")
    out = edit_loss_file(one_line.encode(), edit_for(site, call), "loss.py")
    assert out == edit_loss_file_whole(one_line.encode(), edit_for(site, call), "loss.py")
    compile(out, "loss.py", "exec")
    assert b"from utils import yolopatch_iou" in out


# ---- real releases ----------------------------------------------------------------------------------------

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import upstream  # noqa: E402

# The seven recipes' calls with their default options.
CALLS = {
    "siou": IouCall("siou", (("theta", 4.0),)),
    "eiou": IouCall("eiou"),
    "wiou": IouCall("wiou_v3", (("alpha", 1.9), ("delta", 3.0), ("half_life", 7000))),
    "mpdiou": IouCall("mpdiou", image_size=True),
    "shape-iou": IouCall("shape_iou", (("scale", 0.0),)),
    "inner-iou": IouCall("inner_iou", (("ratio", 0.7), ("base", "none"))),
    "focaler-iou": IouCall("focaler_iou", (("d", 0.0), ("u", 0.95), ("base", "none"))),
}

# (release folder, loss file, site): one release per anchor shape (CI time; tests/iou_sweep.py applies every
# recipe on the releases it is given): BboxLoss with anchor points only (8.0) and with imgsz / stride (8.4),
# RT-DETR's term, YOLOv5's old transposed call (6.0) and the current one, both layouts
REAL = [
    (("ultralytics", "8.0.50"), "ultralytics/yolo/utils/loss.py", "ultralytics"),
    (("ultralytics", "8.2.103"), "ultralytics/utils/loss.py", "ultralytics"),
    (("ultralytics", "8.2.103"), "ultralytics/models/utils/loss.py", "rtdetr"),
    (("ultralytics", "8.4.190"), "ultralytics/utils/loss.py", "ultralytics"),
    (("ultralytics", "8.4.190"), "ultralytics/models/utils/loss.py", "rtdetr"),
    (("yolov5", "6.0.7"), "yolov5/utils/loss.py", "yolov5"),
    (("yolov5", "7.0.14"), "yolov5/utils/loss.py", "yolov5"),
    (("yolov5-upstream", "6.0.7"), "utils/loss.py", "yolov5"),
    (("yolov5-upstream", "7.0.14"), "utils/loss.py", "yolov5"),
]


def release_root(project: str, version: str):
    if project == "yolov5-upstream":
        return upstream.upstream_yolov5(version)
    return upstream.pristine(project, version)


def changed_lines(before: bytes, after: bytes) -> tuple[list[str], list[str]]:
    diff = list(difflib.ndiff(before.decode().splitlines(), after.decode().splitlines()))
    return [line[2:] for line in diff if line.startswith("- ")], [line[2:] for line in diff if line.startswith("+ ")]


@pytest.mark.real
@pytest.mark.parametrize("release, loss_file, site", REAL, ids=[f"{p}-{v}:{s}" for (p, v), _, s in REAL])
def test_real_loss_file(release, loss_file, site):
    root = release_root(*release)
    source = (root / loss_file).read_bytes()
    destination = import_destination(source, loss_file)
    assert (root / destination).with_name("metrics.py").is_file()  # lands beside the module bbox_iou comes from
    # every call on one release (the others apply through the CLI in tests/test_iou_recipes.py and the real
    # sample); elsewhere the anchor shape is what differs: one plain call, and MPDIoU, whose image size is read
    # from the site
    everything = release == ("yolov5", "7.0.14") and site == "yolov5"
    for name, call in CALLS.items() if everything else [("siou", CALLS["siou"]), ("mpdiou", CALLS["mpdiou"])]:
        edit = edit_for(site, call)
        assert classify_loss_file(source, edit, loss_file).status == PENDING
        patched = edit_loss_file(source, edit, loss_file)
        compile(patched, loss_file, "exec", dont_inherit=True)
        assert edit_loss_file(patched, edit, loss_file) == patched, name
        assert classify_loss_file(patched, edit, loss_file).status == APPLIED
        removed, added = changed_lines(source, patched)
        assert len(removed) == 1 and "bbox_iou(" in removed[0] and f"{SITES[site].flag}=True" in removed[0], removed
        assert len(added) == 2 and added[0].startswith("from ") and added[0].endswith(" import yolopatch_iou"), added
        assert f"yolopatch_iou.{call.function}(" in added[1] and "bbox_iou" not in added[1]
        # the statement around the call is untouched: same text before and after the call
        prefix = removed[0][:removed[0].index("bbox_iou(")]
        assert added[1].startswith(prefix)
    assert edit_loss_file_whole(source, edit, loss_file) == patched  # piecewise = whole file (last call)
