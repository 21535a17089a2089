"""Load a reference checkpoint into a yolopatch backbone: a local file or a timm pretrained tag in the local cache.

A backbone's ``weights`` argument is either

  * a file: ``.pth`` / ``.pt`` / ``.bin`` (a state dict ``torch.load`` reads with ``weights_only=True``, possibly
    wrapped in ``{"state_dict": ...}`` or ``{"model": ...}`` as training scripts save it) or ``.safetensors``;
  * a timm pretrained tag such as ``mobilenetv4_conv_small.e2400_r224_in1k`` (or ``timm/...``,
    ``hf-hub:timm/...``) whose weights are already in the local Hugging Face cache. Nothing is downloaded.

The backbone names each reference layout it can read (timm, torchvision, the authors' code) as a map from its
own module names to the reference's; the checkpoint's keys must be exactly one layout's, apart from the
reference's classification head, and every shape must agree. Anything else is a ``WeightsError`` whose message
is one line naming the file or tag.

yolopatch copies this file beside the backbone module files that list it in their recipe.toml. It needs only
torch and the standard library (and the safetensors package for ``.safetensors`` files).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# Keys under which training scripts store the state dict inside a checkpoint, in order of preference.
WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Weights files of a timm model repository on the Hugging Face hub.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
# BatchNorm's step counter is no weight; exported checkpoints often leave it out.
OPTIONAL_SUFFIX = "num_batches_tracked"


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded. The message is one line and names the file or tag."""


def load_reference_weights(model: torch.nn.Module, source) -> str:
    """Load `source` into `model` strictly and return what was loaded (for ``model.loaded_weights``).

    ``model.reference_layouts()`` gives reference name -> (names, head): names maps each of the model's module
    prefixes to the reference's ('' maps every key unchanged), head lists the reference's key prefixes that are
    not part of the backbone (its classifier), which are left out.
    """
    owner, layouts = type(model).__name__, model.reference_layouts()
    path, label = resolve(owner, source)
    state = read_state_dict(owner, path, label)
    reference, mapping = _matching_layout(model, owner, label, state, layouts)
    ours = model.state_dict()
    wrong = [(r, tuple(state[r].shape), tuple(ours[k].shape)) for k, r in mapping.items()
             if r in state and state[r].shape != ours[k].shape]
    if wrong:
        key, theirs, mine = wrong[0]
        raise WeightsError(f"{owner}: {label}: {len(wrong)} tensor(s) of another shape, e.g. {key} {theirs} where "
                           f"{owner} has {mine} (another width or number of input channels?)")
    model.load_state_dict({k: state[r] if r in state else ours[k] for k, r in mapping.items()}, strict=True)
    return f"{label} [{reference}]"


def resolve(owner: str, source) -> tuple:
    """(path of the weights file, label for messages) for a file name or a timm tag."""
    text = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(text, str) or not text.strip():
        raise WeightsError(f"{owner}: weights must be a checkpoint file or a timm pretrained tag, got {source!r}")
    path = Path(text).expanduser()
    if text.endswith(FILE_SUFFIXES) or path.exists():
        if not path.is_file():
            raise WeightsError(f"{owner}: weights file {text} not found")
        return path.resolve(), str(path.resolve())
    return _cached_hub_file(owner, text)


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, found the way huggingface_hub finds it."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "huggingface" / "hub"


def _cached_hub_file(owner: str, tag: str) -> tuple:
    name = tag.split(":", 1)[1] if tag.startswith(("hf-hub:", "hf_hub:")) else tag
    repo = name if "/" in name else f"timm/{name}"  # timm keeps its weights in timm/<model>.<tag>
    cache = hub_cache()
    folder_name = "models--" + repo.replace("/", "--")
    folders = [cache / folder_name]
    if not folders[0].is_dir() and "." not in repo.rsplit("/", 1)[-1]:
        # A model name without a pretrained tag: whichever tag of it is cached, if only one is.
        folders = sorted(p for p in cache.glob(f"{folder_name}.*") if p.is_dir())
        if len(folders) > 1:
            found = ", ".join(p.name[len("models--"):].replace("--", "/") for p in folders)
            raise WeightsError(f"{owner}: several cached timm checkpoints match {tag} ({found}); name one")
    for folder in folders:
        file = _snapshot_file(folder)
        if file is not None:
            found = folder.name[len("models--"):].replace("--", "/")
            return file.resolve(), f"{found} ({file})"
    raise WeightsError(f"{owner}: {tag} is neither a checkpoint file nor a timm tag in the local Hugging Face cache "
                       f"({cache}); nothing is downloaded: pass a file, or fetch the tag once with timm")


def _snapshot_file(folder: Path):
    """The weights file of a cached hub repository: the snapshot refs/main names, else the newest one."""
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return None
    ordered = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    main = folder / "refs" / "main"
    if main.is_file():
        ordered.insert(0, snapshots / main.read_text().strip())
    for snapshot in ordered:
        for name in HUB_FILES:
            if (snapshot / name).is_file():
                return snapshot / name
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_state_dict(owner: str, path: Path, label: str) -> dict:
    """The state dict in a checkpoint file, unwrapped and without DataParallel's 'module.' prefix."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(f"{owner}: reading {label} needs the safetensors package (pip install safetensors)") from None
        try:
            state = load_file(str(path))
        except Exception as exc:  # the package raises its own error types for damaged files
            raise WeightsError(f"{owner}: {label} is not a readable safetensors file ({_one_line(exc)})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickles of whole models or other objects, damaged files
            raise WeightsError(f"{owner}: {label} is not a state dict torch.load reads with weights_only=True "
                               f"({_one_line(exc)})") from None
        while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{owner}: {label} holds no state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def expand_names(model: torch.nn.Module, names: dict) -> dict:
    """Our state-dict key -> the reference's, from a map of module prefixes (the longest matching prefix wins)."""
    prefixes = sorted(names, key=len, reverse=True)
    mapping = {}
    for key in model.state_dict():
        ours = next((p for p in prefixes if p == "" or key.startswith(p + ".")), None)
        if ours is None:  # a gap in the backbone's own layout table, not a user error
            raise AssertionError(f"{type(model).__name__}: no reference name for {key}")
        mapping[key] = names[ours] + key[len(ours):] if ours else names[ours] + key
    return mapping


def _matching_layout(model, owner: str, label: str, state: dict, layouts: dict) -> tuple:
    """(reference name, key map) of the layout whose keys the checkpoint has exactly, else a WeightsError."""
    best = None
    for reference, (names, head) in layouts.items():
        mapping = expand_names(model, names)
        present = {k for k in state if not k.startswith(tuple(head))}
        wanted = set(mapping.values())
        missing = sorted(k for k in wanted - present if not k.endswith(OPTIONAL_SUFFIX))
        unexpected = sorted(present - wanted)
        if not missing and not unexpected:
            return reference, mapping
        if best is None or len(missing) + len(unexpected) < len(best[1]) + len(best[2]):
            best = (reference, missing, unexpected)
    reference, missing, unexpected = best
    parts = [f"{len(keys)} {what} key(s), e.g. {', '.join(keys[:3])}"
             for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    raise WeightsError(f"{owner}: {label} is not a {owner} checkpoint of any known layout "
                       f"({', '.join(layouts)}); against {reference}: {'; '.join(parts)}")
