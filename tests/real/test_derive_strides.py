"""The static stride and width facts (yolopatch/derive/modules.py) against the real thing: stock model configs
of several releases are built with the target's own classes, and a forward hook on every layer measures its
output; each row's static stride and width (at the config's first scale) must equal them. CI measures a
sample of three releases; `python tests/derive_strides.py` measures every stock config of four (on demand).
The config reader is checked against PyYAML on every stock config of the four."""

from __future__ import annotations

import pytest

from derive_strides import RELEASES, compare
from yolopatch import bases, targets
from yolopatch.derive.yamlsubset import load

pytestmark = pytest.mark.real

SAMPLE = {  # CI's share; the releases whose configs derived YAMLs are built from in test_derive_real.py
    "ultralytics-8.4.190": ["yolo11-seg", "yolo26-pose", "yolov10n"],
    "ultralytics-8.0.50": ["yolov8n-seg"],
    "yolov5-7.0.14": ["yolov5-p7"],
}


@pytest.mark.parametrize("release", list(SAMPLE))
def test_static_strides_and_widths_equal_the_measured_ones(release):
    target = targets.detect(RELEASES[release]())
    chosen = [rel for rel in bases.config_paths(target) if rel.rsplit("/", 1)[1][:-5] in SAMPLE[release]]
    assert len(chosen) == len(SAMPLE[release])
    mismatches, compared = compare(target, chosen)
    assert mismatches == []
    assert compared > 10 * len(chosen)  # nearly every row of every config was compared


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
