"""The static stride and width facts (yolopatch/derive/modules.py) against the real thing: every stock model
config of several releases is built with the target's own classes, and a forward hook on every layer
measures its output; each row's static stride and width (at the config's first scale) must equal them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import upstream
from yolopatch import bases, targets
from yolopatch.derive.graph import Graph, Ref, width_value
from yolopatch.derive.yamlsubset import load

pytestmark = pytest.mark.real

MEASURE = Path(__file__).resolve().parents[1] / "derive_measure.py"
HEIGHT, WIDTH = 256, 384  # multiples of 128: YOLOv5's P7 config downsamples that far
RELEASES = {
    "ultralytics-8.4.190": lambda: upstream.pristine("ultralytics", upstream.NEWEST_ULTRALYTICS),
    "ultralytics-8.2.103": lambda: upstream.pristine("ultralytics", upstream.MIDDLE_ULTRALYTICS),
    "ultralytics-8.0.50": lambda: upstream.pristine("ultralytics", upstream.OLDEST_ULTRALYTICS),
    "yolov5-7.0.14": lambda: upstream.pristine("yolov5", upstream.YOLOV5_PACKAGE),
}
# rows whose stride depends on what a torchvision model, or a text-feature layer, gives: not claimed statically
OPAQUE = ("TorchVision", "Index", "ImagePoolingAttn")


def scale_of(config: dict) -> tuple:
    """(width multiple, max channels) at the first scale, as parse_model reads them."""
    scales = config.get("scales")
    if scales:
        _, width, max_channels = next(iter(scales.values()))
        return width, max_channels
    return config.get("width_multiple", 1.0), float("inf")


@pytest.mark.parametrize("release", list(RELEASES))
def test_static_strides_and_widths_equal_the_measured_ones(release):
    root = RELEASES[release]()
    target = targets.detect(root)
    configs = {}
    for rel in bases.config_paths(target):
        config = load((root / rel).read_text(encoding="utf-8"))
        if isinstance(config, dict) and "backbone" in config:
            configs[rel] = config
    result = subprocess.run([sys.executable, str(MEASURE), target.flavour, str(HEIGHT), str(WIDTH), *configs],
                            cwd=root, env=upstream.target_env(root), capture_output=True, text=True, timeout=3000)
    measured = {m["yaml"]: m for m in map(json.loads, (l for l in result.stdout.splitlines() if l.startswith("{")))}
    assert set(measured) == set(configs), result.stderr[-3000:]
    assert [m["yaml"] for m in measured.values() if not m["ok"]] == [], result.stdout[-3000:]

    mismatches, compared, opaque = [], 0, set()
    for rel, config in configs.items():
        graph = Graph.from_config(config, target.family)
        width, max_channels = scale_of(config)
        for row, shape in zip(graph.rows, measured[rel]["rows"]):
            ref = Ref(row.id)
            stride = graph.stride[ref]
            if row.semantics is not None and row.semantics.head:
                continue
            if stride is None:
                opaque.add(row.module if row.module in OPAQUE else f"{rel} row {row.stock}: {graph.why[ref]}")
                continue
            got_stride = 2 ** round(math.log2(HEIGHT / shape[0])) if shape else None
            if got_stride != stride:
                mismatches.append(f"{rel} row {row.stock} {row.module}: stride {stride}, measured {got_stride}")
            channels = width_value(graph.width[ref], target.family, width, max_channels)
            if shape and shape[1] is not None and channels != shape[1]:
                mismatches.append(f"{rel} row {row.stock} {row.module}: width {channels}, measured {shape[1]}")
            compared += 1
    assert mismatches == []
    assert opaque <= set(OPAQUE)
    assert compared > 10 * len(configs)  # nearly every row of every config was compared


@pytest.mark.parametrize("release", list(RELEASES))
def test_the_config_reader_reads_every_stock_config_as_pyyaml_does(release, monkeypatch):
    import yaml

    from yolopatch.derive import yamlsubset

    root = RELEASES[release]()
    fallbacks = []
    original = yamlsubset._pyyaml
    monkeypatch.setattr(yamlsubset, "_pyyaml", lambda text: fallbacks.append(text) or original(text))
    paths = bases.config_paths(targets.detect(root))
    for rel in paths:
        text = (root / rel).read_text(encoding="utf-8")
        assert load(text) == yaml.safe_load(text), rel
    assert len(paths) > 20 and fallbacks == []  # every stock config is in the subset read directly
