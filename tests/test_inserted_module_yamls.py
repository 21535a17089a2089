"""The model YAMLs of the same-width attention recipes and of DySample are the stock YOLOv8 / YOLOv5s
models with rows inserted or replaced, nothing else: removing the attention rows (or putting
nn.Upsample back) gives the stock YAML of the newest ultralytics and of YOLOv5 7.0 row for row."""

import tomllib
import types
from pathlib import Path

import pytest
import yaml

from upstream import NEWEST_ULTRALYTICS, YOLOV5_PACKAGE, pristine
from yolopatch.render import render_yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ATTENTION = {"se": "SE", "cbam": "CBAM", "eca": "ECA", "coordatt": "CoordAtt", "simam": "SimAM", "ema": "EMA"}
STOCK = {
    "ultralytics": lambda: pristine("ultralytics", NEWEST_ULTRALYTICS) / "ultralytics/cfg/models/v8/yolov8.yaml",
    "yolov5": lambda: pristine("yolov5", YOLOV5_PACKAGE) / "yolov5/models/yolov5s.yaml",
}
# the rows each stock head feeds its Detect layer from (P3, P4, P5 outputs of the neck)
STOCK_HEAD_INPUTS = {"ultralytics": [15, 18, 21], "yolov5": [17, 20, 23]}


def rendered_yamls(recipe: str, dialect: str = "scales"):
    """(target, parsed YAML) for every YAML a recipe declares, rendered as apply renders them."""
    raw = tomllib.loads((RECIPES / recipe / "recipe.toml").read_text())
    for spec in raw["yamls"]:
        target_dialect = dialect if spec["target"] == "ultralytics" else "multiples"
        text = render_yaml(types.SimpleNamespace(name=recipe, folder=RECIPES / recipe),
                           types.SimpleNamespace(**spec), target_dialect).decode()
        yield spec, yaml.safe_load(text)


def rows(model: dict) -> list:
    return [list(r) for r in model["backbone"] + model["head"]]


def without_rows(all_rows: list, dropped: set) -> list:
    """Remove rows, renumbering absolute references; a reference to a dropped row (which reads the row
    before it) becomes a reference to that row's input."""
    def renumber(ref):
        if ref < 0:
            return ref
        while ref in dropped:
            ref -= 1
        return ref - sum(d < ref for d in dropped)

    kept = []
    for i, (src, n, module, args) in enumerate(all_rows):
        if i in dropped:
            continue
        src = [renumber(s) for s in src] if isinstance(src, list) else renumber(src)
        kept.append([src, n, module, args])
    return kept


def stock_model(target: str) -> dict:
    return yaml.safe_load(STOCK[target]().read_text())


@pytest.mark.parametrize("recipe", list(ATTENTION))
def test_attention_yamls_are_stock_plus_one_row_per_head_input(recipe):
    module = ATTENTION[recipe]
    specs = list(rendered_yamls(recipe))
    assert {spec["target"] for spec, _ in specs} == {"ultralytics", "yolov5"}
    for spec, model in specs:
        all_rows = rows(model)
        inserted = [i for i, r in enumerate(all_rows) if r[2] == module]
        stock = stock_model(spec["target"])
        stock_rows = rows(stock)
        # one row right after each stock head input, reading it, with the recipe's arguments
        assert inserted == [r + k + 1 for k, r in enumerate(STOCK_HEAD_INPUTS[spec["target"]])]
        assert all(all_rows[i][:2] == [-1, 1] and all_rows[i][3] == spec["vars"]["args"] for i in inserted)
        assert all_rows[-1][0] == inserted, "Detect must read the attention rows"
        assert stock_rows[-1][0] == STOCK_HEAD_INPUTS[spec["target"]]
        assert without_rows(all_rows, set(inserted)) == stock_rows
        assert model["nc"] == stock["nc"]
        for key in ("scales", "depth_multiple", "width_multiple", "anchors"):
            assert model.get(key) == stock.get(key), key


def test_dysample_yamls_are_stock_with_upsampling_replaced():
    specs = list(rendered_yamls("dysample"))
    assert {spec["target"] for spec, _ in specs} == {"ultralytics", "yolov5"}
    for spec, model in specs:
        stock = stock_model(spec["target"])
        # YAML reads the stock rows' None as the string "None" (parse_model evaluates it)
        replaced = [[r[0], r[1], "nn.Upsample", ["None", 2, "nearest"]] if r[2] == "DySample" else r
                    for r in rows(model)]
        assert sum(r[2] == "DySample" for r in rows(model)) == 2
        assert all(r[3] == [2, "lp", 4, False] for r in rows(model) if r[2] == "DySample")
        assert replaced == rows(stock)
        for key in ("nc", "scales", "depth_multiple", "width_multiple", "anchors"):
            assert model.get(key) == stock.get(key), key


@pytest.mark.parametrize("recipe", [*ATTENTION, "dysample"])
def test_old_ultralytics_dialect_keeps_the_rows(recipe):
    """Releases before 8.0.51 read depth/width multiples instead of `scales`; the rows are the same."""
    new = {spec["name"]: rows(m) for spec, m in rendered_yamls(recipe, "scales")}
    for spec, model in rendered_yamls(recipe, "multiples"):
        if spec["target"] == "ultralytics":
            assert "scales" not in model and model["width_multiple"] == 0.25
            assert rows(model) == new[spec["name"]]
