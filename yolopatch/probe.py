"""Build check, run as a script inside a target checkout's interpreter (it imports only torch and the
target, never yolopatch): build each YAML through the target's own model class for its task, run a forward
pass at a non-square size, and print one JSON line per YAML. Used by `yolopatch demo` and the tests (an
independent reference for verify: the task comes from the target's own guess_model_task, not from verify).

usage: python probe.py FLAVOUR YAML [YAML ...] [--flops]   (--flops: also GFLOPs at 640)
"""

import json
import sys
import traceback

import torch


ULTRALYTICS_CLASSES = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel",
                       "obb": "OBBModel", "classify": "ClassificationModel"}


def model_class(flavour: str, yaml_path: str):
    """The model class the target itself would use for this YAML (ultralytics: its guess_model_task)."""
    if flavour == "ultralytics":
        from ultralytics.nn import tasks

        if "rtdetr" in yaml_path.rsplit("/", 1)[-1]:
            return tasks.RTDETRDetectionModel
        import yaml

        with open(yaml_path, encoding="utf-8") as f:
            task = tasks.guess_model_task(yaml.safe_load(f))
        return getattr(tasks, ULTRALYTICS_CLASSES.get(task, "DetectionModel"))
    module = __import__("yolov5.models.yolo" if flavour == "yolov5-pypi" else "models.yolo", fromlist=["Model"])
    with open(yaml_path, encoding="utf-8") as f:
        segment = "Segment," in f.read()
    return module.SegmentationModel if segment else module.Model


def gflops_at_640(model) -> float:
    """FLOPs of one 640x640 forward, counted by torch itself (a multiply-add counts as two)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, 640, 640))
    return round(counter.get_total_flops() / 1e9, 2)


def build(flavour: str, yaml_path: str, with_flops: bool) -> dict:
    torch.manual_seed(0)
    model = model_class(flavour, yaml_path)(yaml_path)
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 192, 256))
    result = {"params": sum(p.numel() for p in model.parameters()), "strides": [float(s) for s in model.stride],
              "model_class": type(model).__name__}
    if with_flops:
        result["gflops"] = gflops_at_640(model)
    return result


def main() -> None:
    torch.set_num_threads(1)
    with_flops = "--flops" in sys.argv
    flavour, *paths = [a for a in sys.argv[1:] if a != "--flops"]
    for path in paths:
        try:
            result = {"yaml": path, "ok": True, **build(flavour, path, with_flops)}
        except Exception as exc:  # report and go on with the next YAML
            result = {"yaml": path, "ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "trace": traceback.format_exc()[-1500:]}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
