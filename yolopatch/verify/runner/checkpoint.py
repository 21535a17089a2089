"""Steps 8 and 9: save a checkpoint the way the target does, reload it in a fresh interpreter with the
target's loader, export it with the target's exporter and run the ONNX file with onnxruntime; each
compared with the reference output of the model that was saved."""

from __future__ import annotations

import pickle
import sys
from copy import deepcopy
from pathlib import Path

import torch

from ..protocol import StepFailure
from .adapters import primary_tensor
from .layers import seeded_input, train_size
from .tasks import comparable, one_to_one


def _unpicklable(news: list) -> list:
    culprits = []
    for new in news:
        try:
            pickle.dumps(new.layer)
        except Exception as exc:  # pickling raises many types (PicklingError, TypeError, AttributeError)
            culprits.append(f"{new.label} ({type(exc).__name__}: {exc})")
    return culprits


def save_for_reload(adapter, model, optimizer, news: list, stem: str, folder: Path, describe) -> dict:
    """Write the checkpoint as the target's trainer does, finish it as the trainer does when training ends
    (strip_optimizer), and write the reference output of the model as it will be loaded (half -> float)."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, reference = folder / f"{stem}.pt", folder / f"{stem}.reference.pt"
    try:
        adapter.save_checkpoint(model, optimizer, checkpoint)
    except Exception as exc:
        checkpoint.unlink(missing_ok=True)
        culprits = _unpicklable(news)
        reason = f"cannot pickle {', '.join(culprits)}" if culprits else describe(exc)
        raise StepFailure(f"saving the checkpoint with torch.save failed: {reason}") from None
    try:
        adapter.finish_training(checkpoint)
    except Exception as exc:
        raise StepFailure(f"the end of training (the target's strip_optimizer on the saved checkpoint) failed: "
                          f"{describe(exc)}") from None
    twin = deepcopy(model).half().float().eval()
    x = seeded_input(train_size(model), seed=3)
    outputs = {}
    with torch.no_grad():
        outputs["output"] = primary_tensor(twin(x))
        if one_to_one(twin) and hasattr(twin, "end2end"):
            # what an exporter that selects the one-to-one branch (YOLO26, YOLOv10) writes: top-k rows
            twin.end2end = True
            outputs["top_k_output"] = primary_tensor(twin(x))
    torch.save({"input": x, **outputs}, str(reference))
    return {"checkpoint": str(checkpoint), "reference": str(reference)}


def _row_set_error(actual, expected) -> float:
    """Largest distance from any row to its closest row in the other output: row order is not meaningful
    in a top-k output (RT-DETR's queries, a one-to-one head's detections), where near-equal scores may come
    out in either order."""
    a, e = actual.reshape(-1, actual.shape[-1]), expected.reshape(-1, expected.shape[-1])
    distance = (a[:, None, :] - e[None, :, :]).abs().amax(-1)
    return max(float(distance.min(1).values.max()), float(distance.min(0).values.max()))


def compare(actual, expected, what: str, tolerance: float, unordered_rows: bool = False,
            reference: str = "the saved model") -> str:
    if tuple(actual.shape) != tuple(expected.shape):
        raise StepFailure(f"{what} has shape {tuple(actual.shape)}, {reference} gives {tuple(expected.shape)}")
    actual, expected = actual.float(), expected.float()
    if not bool(torch.equal(actual.isfinite(), expected.isfinite())):
        raise StepFailure(f"{what} has non-finite values where {reference}'s output has none, or the reverse")
    actual, expected = actual.nan_to_num(), expected.nan_to_num()
    scale = 1.0 + float(expected.abs().max()) if expected.numel() else 1.0
    if not expected.numel():
        error = 0.0
    elif unordered_rows and expected.dim() >= 2:
        error = _row_set_error(actual, expected)
    else:
        error = float((actual - expected).abs().max())
    if error > tolerance * scale:
        raise StepFailure(f"{what} differs from {reference}'s output: max abs difference {error:.3g} "
                          f"(allowed {tolerance * scale:.3g})")
    return f"max abs difference {error:.2g} over {expected.numel()} values"


def _reference(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)   # our own file: tensors only


def reload_one(adapter, item: dict, kind: str) -> str:
    """In the fresh interpreter: load with the target's loader and compare with the reference."""
    model = adapter.load_checkpoint(Path(item["checkpoint"]))
    saved = _reference(item["reference"])
    with torch.no_grad():
        y = primary_tensor(model(saved["input"]))
    return "loaded in a fresh interpreter; " + compare(comparable(kind, y), comparable(kind, saved["output"]),
                                                       "the reloaded model's output", 1e-4, kind == "rtdetr")


def export_one(adapter, item: dict, kind: str) -> str:
    try:
        import onnxruntime
    except ImportError:
        raise StepFailure(f"onnxruntime is not installed in {sys.executable}: pip install onnx onnxruntime") from None
    saved = _reference(item["reference"])
    x = saved["input"]
    path = adapter.export_onnx(Path(item["checkpoint"]), (int(x.shape[2]), int(x.shape[3])), kind)
    if not path.is_file():
        raise StepFailure(f"the exporter wrote no ONNX file ({path})")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    y = torch.from_numpy(session.run(None, feed)[0])
    expected, top_k = saved["output"], kind == "rtdetr"
    if "top_k_output" in saved and tuple(y.shape) == tuple(saved["top_k_output"].shape) != tuple(expected.shape):
        expected, top_k = saved["top_k_output"], True   # the exporter chose the one-to-one branch
    return f"{path.name} via onnxruntime {onnxruntime.__version__}; " + compare(
        comparable(kind, y), comparable(kind, expected), "the ONNX output", 1e-3, top_k)
