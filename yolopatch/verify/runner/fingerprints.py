"""Step 5, one side of it: a fingerprint of each stock model as this checkout builds it (parameter count
and a digest of its outputs for a fixed seed and input). The orchestrator compares the fingerprints of
the patched checkout with those of a pristine copy built from the saved originals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .adapters import primary_tensor
from .figures import parameter_count

STOCK_INPUT = (128, 160)


def _tensors(output):
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, dict):
        for key in sorted(output, key=str):
            yield from _tensors(output[key])
    elif isinstance(output, (list, tuple)):
        for item in output:
            yield from _tensors(item)


def fingerprint(adapter, item, root: Path) -> dict:
    # One thread in both processes: the reduction order, and so every output bit, is then the same.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        d = adapter.load_yaml(root / item.yaml)
        torch.manual_seed(0)
        model = adapter.build(d, item.scale, item.task).eval()
        generator = torch.Generator().manual_seed(1)
        x = torch.rand(1, 3, *STOCK_INPUT, generator=generator)
        with torch.no_grad():
            output = model(x)
        digest = hashlib.sha256()
        for tensor in _tensors(output):
            tensor = tensor.detach().contiguous().float()
            digest.update(repr(tuple(tensor.shape)).encode())
            digest.update(tensor.numpy().tobytes())
        main = primary_tensor(output)
        return {"params": parameter_count(model), "digest": digest.hexdigest(),
                "checksum": float(main.double().abs().sum()), "output_shape": list(main.shape)}
    except Exception as exc:  # reported as this stock model's failure
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        torch.set_num_threads(threads)


def fingerprints(adapter, spec) -> dict:
    root = Path(spec.root)
    return {item.name: fingerprint(adapter, item, root) for item in spec.stock}
