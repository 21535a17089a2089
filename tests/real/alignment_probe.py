"""Run inside a target checkout's interpreter (imports only torch, PyYAML and the target): build model YAMLs
and report how their layers line up with the YAML rows. One JSON line per request on stdout.

usage: python alignment_probe.py FLAVOUR [--rows YAML ...] [--same YAML_A YAML_B] [--onnx YAML]
  --rows   layer indices, types and the layers freeze=5 freezes, per YAML
  --same   whether two YAMLs give equal outputs for the same seed and input
  --onnx   ONNX export of a YAML's model, onnxruntime against PyTorch
  --life   what training and tooling do to a model: a training forward and backward, then deepcopy (EMA),
           pickling, the profiling and (YOLOv5) feature-visualising forward branches, fuse(), half()
"""

import io
import json
import sys

import torch
import yaml as pyyaml


def model_class(flavour: str, path: str):
    if flavour == "ultralytics":
        from ultralytics.nn import tasks

        return tasks.RTDETRDetectionModel if "rtdetr" in path.rsplit("/", 1)[-1] else tasks.DetectionModel
    module = __import__("yolov5.models.yolo" if flavour == "yolov5-pypi" else "models.yolo", fromlist=["Model"])
    return module.Model


def build(flavour: str, path: str):
    torch.manual_seed(0)
    cls = model_class(flavour, path)
    model = cls(path, verbose=False) if flavour == "ultralytics" else cls(path)
    return model.eval()


def freeze_prefixes(count: int) -> list:
    """What both trainers freeze for `freeze=count`: parameters whose name holds `model.{x}.`, x < count."""
    return [f"model.{x}." for x in range(count)]


def rows(flavour: str, path: str) -> dict:
    model = build(flavour, path)
    spec = pyyaml.safe_load(open(path))
    yaml_names = [str(row[2]) for row in spec["backbone"] + spec["head"]]
    own = [m for m in model.model if type(m).__name__ != "BackboneLevel"]  # one layer per YAML entry
    frozen = {name for name, _ in model.named_parameters() if any(p in name for p in freeze_prefixes(5))}
    rows_0_4 = {name for name, _ in model.named_parameters() if int(name.split(".")[1]) < 5}
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        model(x)
    return {"yaml": path, "indices": [int(m.i) for m in model.model], "layers": len(model.model),
            "types": [str(m.type).rsplit(".", 1)[-1] for m in own], "yaml_names": [n.rsplit(".", 1)[-1] for n in yaml_names],
            "froze_exactly_rows_0_4": frozen == rows_0_4, "rows_0_4_params": len(rows_0_4)}


def first_output(result):
    return result[0] if isinstance(result, (list, tuple)) else result


def same(flavour: str, a: str, b: str) -> dict:
    x = torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    outs = []
    for path in (a, b):
        with torch.no_grad():
            outs.append(first_output(build(flavour, path)(x)))
    return {"yaml": a, "equal": bool(torch.equal(*outs)), "shape": list(outs[0].shape)}


def onnx(flavour: str, path: str) -> dict:
    import onnxruntime

    model = build(flavour, path)
    model.model[-1].export = True
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        expected = first_output(model(x))
    buffer = io.BytesIO()
    torch.onnx.export(model, x, buffer, dynamo=False, opset_version=17, input_names=["images"])
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    return {"yaml": path, "max_abs_diff": float((got - expected).abs().max()), "scale": float(expected.abs().max())}


def life(flavour: str, path: str) -> dict:
    import copy
    import tempfile
    from pathlib import Path

    model = build(flavour, path).train()
    x = torch.rand(2, 3, 128, 160)
    out = model(x)
    tensors = out.values() if isinstance(out, dict) else (out if isinstance(out, (list, tuple)) else [out])
    sum(t.float().sum() for t in tensors if isinstance(t, torch.Tensor)).backward()
    copy.deepcopy(model)  # fails if a forward left a non-leaf tensor on a module
    buffer = io.BytesIO()
    torch.save(model, buffer)
    restored = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False).eval()
    model.eval()
    sample = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        same_after_reload = bool(torch.equal(first_output(restored(sample)), first_output(model(sample))))
        if flavour == "ultralytics":
            model.predict(sample, profile=True)
        else:
            with tempfile.TemporaryDirectory() as folder:
                model._forward_once(sample, profile=True, visualize=Path(folder))
                visualised = len(list(Path(folder).iterdir()))
        before_fuse = first_output(model(sample))
        fused = copy.deepcopy(model).fuse()
        fused_diff = float((first_output(fused(sample)) - before_fuse).abs().max())
    half = copy.deepcopy(model).half()
    return {"yaml": path, "same_after_reload": same_after_reload, "fused_diff": fused_diff,
            "scale": float(before_fuse.abs().max()), "half": all(p.dtype == torch.float16 for p in half.parameters()),
            "visualised": visualised if flavour != "ultralytics" else None}


def main() -> None:
    torch.set_num_threads(1)
    flavour, requests, mode = sys.argv[1], {}, None
    for arg in sys.argv[2:]:
        if arg.startswith("--"):
            mode = arg[2:]
            requests[mode] = []
        else:
            requests[mode].append(arg)
    results = [{"rows": rows(flavour, p)} for p in requests.get("rows", [])]
    if "same" in requests:
        results.append({"same": same(flavour, *requests["same"])})
    if "onnx" in requests:
        results.append({"onnx": onnx(flavour, *requests["onnx"])})
    if "life" in requests:
        results.append({"life": life(flavour, *requests["life"])})
    for result in results:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
