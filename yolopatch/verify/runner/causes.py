"""Faults of the environment (not of the patch) that verify recognises in a failure message, each with the
fix a user applies, and the test of whether two failures are "the same" (the patched model's and the
stock model's). Standard library only: the orchestrator imports it too, for the import step.

A failure is put on the environment only when the stock model fails the same step the same way; the
table below only names the cause and the fix, it never decides the verdict by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENVIRONMENT, PATCH = "environment", "patch"


@dataclass(frozen=True)
class KnownCause:
    name: str
    pattern: str      # a regular expression searched in the failure message
    what: str         # what happened, in one sentence
    fix: str          # what the user does


NETWORK_BLOCKED = "network access is disabled while yolopatch verify runs"   # env.NetworkDisabled's message

KNOWN = (
    KnownCause("network-needed", re.escape(NETWORK_BLOCKED),
               "the target downloads a file for this step (pretrained weights of a TorchVision backbone, a font, a "
               "text encoder) and verify runs without network",
               "download the file once where the target caches it (for TorchVision weights: run the model once with "
               "network, or put the file in $TORCH_HOME/hub/checkpoints) and run verify again"),
    KnownCause("torch-weights-only", r"Weights only load failed|weights_only=True",
               "torch >= 2.6 loads checkpoints with weights_only=True unless told otherwise, and this release of the "
               "target calls torch.load without weights_only=False, so the checkpoints it writes (which pickle the "
               "model) are refused",
               "set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the environment where you train and load models (torch then "
               "unpickles full checkpoints: load only files you trust), or install torch < 2.6, or use a release of "
               "the target that passes weights_only=False"),
    KnownCause("onnxscript-missing", r"No module named '?onnxscript",
               "torch >= 2.9 exports ONNX with its dynamo exporter unless the caller passes dynamo=False, that exporter "
               "needs the onnxscript package, and this release's exporter does not choose",
               "pip install onnxscript, or install torch < 2.9"),
    KnownCause("numpy-trapz", r"has no attribute 'trapz'",
               "numpy 2 deprecated np.trapz (now np.trapezoid) and its newest releases no longer have it; this release "
               "of the target calls it",
               "pip install 'numpy<2', or use a release of the target that calls np.trapezoid"),
    KnownCause("pillow-getsize", r"has no attribute 'getsize'",
               "Pillow 10 removed FreeTypeFont.getsize, which this release of the target calls when it draws labels",
               "pip install 'Pillow<10'"),
    KnownCause("setuptools-pkg-resources", r"No module named '?pkg_resources",
               "setuptools 81 removed pkg_resources, which this release of the target imports",
               "pip install 'setuptools<81'"),
    KnownCause("huggingface-hub-too-new", r"No module named '?huggingface_hub\.",
               "the installed huggingface_hub no longer has a module this release of the target imports (the yolov5 "
               "7.0.x package pins huggingface_hub < 0.25 and looks up every weights path on the hub first)",
               "pip install 'huggingface_hub<0.25' (the target's own requirement)"),
)


def recognise(message: str) -> KnownCause | None:
    for cause in KNOWN:
        if re.search(cause.pattern, message or ""):
            return cause
    return None


def _normalised(message: str, names: tuple) -> str:
    """A failure message without what differs between two models that fail the same way: their names, paths,
    numbers and the place a traceback ended."""
    text = message or ""
    for name in sorted((n for n in names if n), key=len, reverse=True):
        text = text.replace(name, "<model>")
    text = re.sub(r"\(at [^)]*\)", "", text)
    text = re.sub(r"(?:[A-Za-z]:)?[\\/][^\s'\",:)]+", "<path>", text)
    text = re.sub(r"\d+(?:\.\d+)?", "#", text)
    return " ".join(text.split())


def same_failure(a: str, b: str, names: tuple = ()) -> bool:
    """Do two failure messages say the same thing (the same known cause, or the same text up to names, paths
    and numbers)?"""
    known_a, known_b = recognise(a), recognise(b)
    if known_a or known_b:
        return known_a is known_b
    return _normalised(a, names) == _normalised(b, names)


def cause_record(origin: str, evidence: str, message: str = "") -> dict:
    """The `cause` of a failed step: who is to blame, on what evidence, and the known cause with its fix."""
    known = recognise(message)
    return {"origin": origin, "name": known.name if known else None, "what": known.what if known else None,
            "fix": known.fix if known else None, "evidence": evidence}
