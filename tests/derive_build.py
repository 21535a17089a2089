"""Build check for derived YAMLs, run as a script in a target checkout's interpreter (it imports only torch
and the target): build each YAML at each scale it declares with the target's own model class for its task
(which runs the target's own stride probe, a forward pass at 256x256), run a forward pass at a non-square
size at the first scale, and print one JSON line per (YAML, scale).

usage: python derive_build.py FLAVOUR YAML [YAML ...] [--first-scale]
  FLAVOUR: ultralytics | yolov5-pypi | yolov5-upstream
"""

import json
import sys
import traceback

import torch

TASK_OF_HEAD = {"classify": "classify", "segment": "segment", "pose": "pose", "obb": "obb"}


def task_of(config: dict) -> str:
    head = config["head"][-1][2].lower()
    if head == "rtdetrdecoder":
        return "rtdetr"
    return next((task for key, task in TASK_OF_HEAD.items() if key in head), "detect")


def load_config(path: str, tasks) -> dict:
    """The config as the target reads it (yaml_model_load since 8.0.5x; a plain YAML load before)."""
    if hasattr(tasks, "yaml_model_load"):
        return tasks.yaml_model_load(path)
    import yaml

    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def ultralytics_builder(path: str):
    from ultralytics.nn import tasks

    config = load_config(path, tasks)
    classes = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel",
               "obb": "OBBModel", "classify": "ClassificationModel", "rtdetr": "RTDETRDetectionModel"}
    task = task_of(config)
    model_class = getattr(tasks, classes[task])
    scales = list(config.get("scales") or {}) or [None]

    def build(scale):
        cfg = dict(config)
        if scale is not None:
            cfg["scale"] = scale
        return model_class(cfg, verbose=False)

    return task, scales, build


def yolov5_builder(path: str, flavour: str):
    import yaml

    module = __import__("yolov5.models.yolo" if flavour == "yolov5-pypi" else "models.yolo", fromlist=["Model"])
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    task = task_of(config)
    model_class = {"segment": getattr(module, "SegmentationModel", None)}.get(task) or module.Model
    return task, [None], lambda scale: model_class(path)


def check(flavour: str, path: str, first_scale: bool):
    try:
        task, scales, build = ultralytics_builder(path) if flavour == "ultralytics" else yolov5_builder(path, flavour)
    except Exception as exc:  # the YAML does not even load
        yield {"yaml": path, "scale": None, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return
    for index, scale in enumerate(scales[:1] if first_scale else scales):
        result = {"yaml": path, "scale": scale, "task": task}
        try:
            torch.manual_seed(0)
            model = build(scale)
            model.eval()
            if index == 0:
                with torch.no_grad():
                    model(torch.rand(1, 3, 256, 384))
            strides = getattr(model, "stride", None)
            result.update(ok=True, params=sum(p.numel() for p in model.parameters()),
                          strides=[float(s) for s in strides] if isinstance(strides, torch.Tensor) else None)
        except Exception as exc:  # report and go on
            result.update(ok=False, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-1500:])
        yield result


def main() -> None:
    torch.set_num_threads(1)
    first_scale = "--first-scale" in sys.argv
    flavour, *paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    for path in paths:
        for result in check(flavour, path, first_scale):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
