"""The static stride and width facts against forward hooks, for every stock model config of four releases (on
demand; tests/real/test_derive_strides.py runs a sample in CI). Each config is built at its first scale with
the target's own model class in the target's interpreter (derive_measure.py), every layer's output measured,
and each row's static stride and width compared.

usage: python tests/derive_strides.py [RELEASE ...]      # e.g. ultralytics-8.4.190 yolov5-7.0.14
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream  # noqa: E402
from yolopatch import bases, targets  # noqa: E402
from yolopatch.derive.graph import Graph, Ref, width_value  # noqa: E402
from yolopatch.derive.yamlsubset import load  # noqa: E402

MEASURE = Path(__file__).resolve().parent / "derive_measure.py"
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


def compare(target, rels: list) -> tuple:
    """(mismatches, rows compared) over the configs `rels` of the checkout; raises when one does not build or a
    row's stride is unknown for a reason other than an opaque module."""
    root = target.root
    configs = {}
    for rel in rels:
        config = load((root / rel).read_text(encoding="utf-8"))
        if isinstance(config, dict) and "backbone" in config:
            configs[rel] = config
    result = subprocess.run([sys.executable, str(MEASURE), target.flavour, str(HEIGHT), str(WIDTH), *configs],
                            cwd=root, env=upstream.target_env(root), capture_output=True, text=True, timeout=3000)
    measured = {m["yaml"]: m for m in map(json.loads, (l for l in result.stdout.splitlines() if l.startswith("{")))}
    if set(measured) != set(configs):
        raise AssertionError(f"not every config was measured: {result.stderr[-3000:]}")
    broken = [m["yaml"] for m in measured.values() if not m["ok"]]
    if broken:
        raise AssertionError(f"these configs did not build: {broken}: {result.stdout[-3000:]}")
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
    unexplained = opaque - set(OPAQUE)
    if unexplained:
        raise AssertionError(f"rows of unknown stride: {sorted(unexplained)}")
    return mismatches, compared


def main() -> None:
    failed = False
    for name in sys.argv[1:] or list(RELEASES):
        target = targets.detect(RELEASES[name]())
        rels = bases.config_paths(target)
        mismatches, compared = compare(target, rels)
        print(f"{name}: {len(rels)} configs, {compared} rows compared, {len(mismatches)} mismatch(es)")
        for line in mismatches:
            print(f"  {line}")
        failed |= bool(mismatches)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
