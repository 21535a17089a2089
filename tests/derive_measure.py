"""Measure every row of stock model configs, run as a script in a target checkout's interpreter (it imports
only torch and the target): build each config at its first scale with the target's own model class, run a
forward pass with a hook on every layer, and print one JSON line per config with each row's output
height and channels. tests/real/test_derive_strides.py compares them with yolopatch's static facts.

usage: python derive_measure.py FLAVOUR HEIGHT WIDTH YAML [YAML ...]
"""

import json
import sys
import traceback

import torch

from derive_build import load_config, task_of  # noqa: E402  (the same task -> model class rule as the build check)


def shape_of(output):
    """(height, channels) of a layer's output: a map, or a list of maps of one size (CBLinear); else None."""
    if isinstance(output, torch.Tensor) and output.dim() == 4:
        return [int(output.shape[2]), int(output.shape[1])]
    if isinstance(output, (list, tuple)) and output and all(isinstance(o, torch.Tensor) and o.dim() == 4 for o in output):
        heights = {int(o.shape[2]) for o in output}
        if len(heights) == 1:
            return [heights.pop(), None]
    return None


def build(flavour: str, path: str):
    if flavour == "ultralytics":
        from ultralytics.nn import tasks

        config = load_config(path, tasks)
        for row in config["backbone"] + config["head"]:  # torchvision weights would be downloaded; shapes need none
            if row[2] == "TorchVision" and len(row[3]) > 2:
                row[3][2] = None
        scales = list(config.get("scales") or {})
        if scales:
            config["scale"] = scales[0]
        task = task_of(config)
        classes = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel",
                   "classify": "ClassificationModel", "rtdetr": "RTDETRDetectionModel"}
        head = config["head"][-1][2]
        name = {"WorldDetect": "WorldModel", "YOLOEDetect": "YOLOEModel", "YOLOESegment": "YOLOESegModel",
                "YOLOESegment26": "YOLOESegModel", "Depth": "DepthModel",
                "SemanticSegment": "SemanticSegmentationModel"}.get(head, classes[task])
        return getattr(tasks, name)(config, verbose=False)
    import yaml

    module = __import__("yolov5.models.yolo" if flavour == "yolov5-pypi" else "models.yolo", fromlist=["Model"])
    with open(path, encoding="utf-8") as handle:
        task = task_of(yaml.safe_load(handle))
    return (getattr(module, "SegmentationModel") if task == "segment" else module.Model)(path)


def measure(flavour: str, path: str, height: int, width: int) -> dict:
    try:
        torch.manual_seed(0)
        model = build(flavour, path).eval()
        rows = {}
        for i, layer in enumerate(model.model):
            layer.register_forward_hook(lambda m, args, out, i=i: rows.__setitem__(i, shape_of(out)))
        with torch.no_grad():
            model(torch.zeros(1, 3, height, width))
        return {"yaml": path, "ok": True, "rows": [rows.get(i) for i in range(len(model.model))]}
    except Exception as exc:  # report and go on with the next config
        return {"yaml": path, "ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1200:]}


def main() -> None:
    torch.set_num_threads(1)
    flavour, height, width, *paths = sys.argv[1:]
    for path in paths:
        print(json.dumps(measure(flavour, path, int(height), int(width))), flush=True)


if __name__ == "__main__":
    main()
