"""The modules of a checkout, as `RewriteTargetImports` needs them: read from the files, never imported."""

from __future__ import annotations


from ..names import bound_names
from ..targets import Target
from .rewrite import Layout

# Where a layout's importable packages are, relative to the checkout root.
_PACKAGES = {"ultralytics": ("ultralytics",), "yolov5-pypi": ("yolov5",), "yolov5-upstream": ("models", "utils")}


def _dotted(rel: str) -> str:
    stem = rel[:-3]
    if stem.endswith("/__init__"):
        stem = stem[: -len("/__init__")]
    return stem.replace("/", ".")


def checkout_layout(target: Target) -> Layout:
    root = target.root
    files: dict[str, str] = {}
    for package in _PACKAGES[target.flavour]:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "__pycache__" not in rel and rel != target.parser_file:  # it imports the added module itself
                files.setdefault(_dotted(rel), rel)

    def read(rel: str) -> bytes | None:
        path = root / rel
        return path.read_bytes() if path.is_file() else None

    def bound(dotted: str) -> dict[str, str] | None:
        rel = files.get(dotted)
        data = read(rel) if rel else None
        if data is None:
            return None
        return {name: "imports" if "imported" in origin else "defines"
                for name, origin in bound_names(data, rel, read).items()}

    modules_dir = target.modules_dir + "/"
    first = [m for m, rel in files.items() if rel.startswith(modules_dir) or rel == target.modules_dir + ".py"]
    search = first + [m for m in files if m not in first]
    return Layout(list(files), bound, search)
