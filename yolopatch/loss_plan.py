"""What a recipe with a [loss] edit writes: the target's loss files with their IoU call replaced, and the
IoU module beside the module their `bbox_iou` comes from (edits/loss_call.py does the editing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import RefusedError
from .recipes import LOSS_MODULE_FILE, Recipe
from .targets import Target

# Where each release keeps the box losses, relative to the package folder, by site (first that exists).
_ULTRALYTICS = (("ultralytics", ("utils/loss.py", "yolo/utils/loss.py")),
                ("rtdetr", ("models/utils/loss.py",)))


@dataclass(frozen=True)
class LossSite:
    key: str     # a key of edits.loss_call.SITES
    file: str    # relative to the checkout root
    xywh: bool   # the box format the site's boxes are in (what the verify runner computes its reference with)


def loss_sites(target: Target, exists: Callable[[str], bool], rtdetr: bool = True) -> list[LossSite]:
    """The loss files of the target holding a box loss the recipes edit (RT-DETR's only with rtdetr)."""
    if target.family == "yolov5":
        package = target.modules_dir.rpartition("/")[0]   # "" or "yolov5"
        rel = f"{package}/utils/loss.py" if package else "utils/loss.py"
        return [LossSite("yolov5", rel, True)] if exists(rel) else []
    sites = []
    for key, candidates in _ULTRALYTICS:
        if key == "rtdetr" and not rtdetr:
            continue
        found = next((f"ultralytics/{c}" for c in candidates if exists(f"ultralytics/{c}")), None)
        if found:
            sites.append(LossSite(key, found, key == "rtdetr"))
    return sites


def iou_call(recipe: Recipe, values: dict):
    """The edits.loss_call.IouCall that replaces the stock call: the recipe's function with its options, in
    declared order."""
    from .edits.loss_call import IouCall   # libcst: only where files are edited (verify reads loss_sites only)

    chosen = tuple((o.name, values.get(o.name, o.default)) for o in recipe.options)
    needs_size = recipe.loss.function == "mpdiou" or dict(chosen).get("base") == "mpdiou"
    return IouCall(recipe.loss.function, chosen, image_size=needs_size)


def loss_files(target: Target, recipe: Recipe, values: dict, pristine: Callable[[str], bytes]) -> dict[str, bytes]:
    """rel -> bytes: every loss file edited for `recipe`, and the IoU module where they import it from."""
    from .edits.loss_call import SITES, LossCallEdit, edit_loss_file, import_destination

    def exists(rel: str) -> bool:
        try:
            pristine(rel)
            return True
        except RefusedError:
            return False

    sites = loss_sites(target, exists, recipe.loss.rtdetr)
    if not sites or sites[0].key == "rtdetr":
        raise RefusedError(f"recipe {recipe.name}: {target.describe()} has no box loss file where the edit expects "
                           f"one (utils/loss.py); nothing was written")
    call = iou_call(recipe, values)
    written: dict[str, bytes] = {}
    module = recipe.source_path(LOSS_MODULE_FILE).read_bytes()
    for site in sites:
        source = pristine(site.file)
        written[site.file] = edit_loss_file(source, LossCallEdit(SITES[site.key], call), site.file)
        destination = import_destination(source, site.file)
        if destination is None:
            raise RefusedError(f"{site.file}: cannot tell where its bbox_iou comes from, so where the IoU module "
                               f"goes; nothing was written")
        written[destination] = module
    return written
