"""Detect what kind of YOLO checkout a folder is, which release, and where its files live."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from .errors import RefusedError

# Releases the edits are known to handle (inclusive lower bound, exclusive upper bound).
SUPPORTED = {
    "ultralytics": ((8, 0, 0), (8, 5, 0)),
    "yolov5": ((6, 0, 0), (7, 1, 0)),
}


@dataclass(frozen=True)
class Target:
    root: Path
    flavour: str          # "ultralytics" | "yolov5-pypi" | "yolov5-upstream"
    family: str           # "ultralytics" | "yolov5": which recipe targets and templates apply
    version: str          # release string, or a structural description for upstream checkouts
    parser_file: str      # file holding parse_model and the forward loops (relative, POSIX)
    modules_dir: str      # folder receiving module files (relative, POSIX)
    import_prefix: str    # dotted package of modules_dir
    cfg_dir: str          # folder receiving generated model YAMLs (relative, POSIX)
    yaml_dialect: str     # "scales" (ultralytics >= 8.0.51) or "multiples" (depth/width_multiple)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version) or (0,)

    def describe(self) -> str:
        return f"{self.flavour} {self.version}"


def parse_version(text: str) -> tuple[int, ...] | None:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def _dunder_version(init_file: Path) -> str | None:
    """__version__ from a package's __init__.py, read statically (target code is never run here)."""
    try:
        tree = ast.parse(init_file.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    return None


def _check_supported(family: str, version: str, flavour: str) -> None:
    low, high = SUPPORTED[family]
    parsed = parse_version(version)
    if parsed is None or not (low <= parsed + (0,) * (3 - len(parsed)) < high):
        span = f"{'.'.join(map(str, low))} up to (not including) {'.'.join(map(str, high))}"
        raise RefusedError(f"{flavour} {version} is not supported: supported releases are {span}")


def _ultralytics(root: Path) -> Target:
    pkg = root / "ultralytics"
    version = _dunder_version(pkg / "__init__.py") or "unknown"
    _check_supported("ultralytics", version, "ultralytics")
    modules_dir = "ultralytics/nn/modules" if (pkg / "nn" / "modules").is_dir() else "ultralytics/nn"
    # Next to the release's own model YAMLs: cfg/models (8.0.1xx+), models/ (8.0.4x+), yolo/v8/models (8.0.0).
    candidates = ("ultralytics/cfg/models", "ultralytics/models", "ultralytics/yolo/v8/models")
    models_root = next((c for c in candidates if (root / c).is_dir()), candidates[0])
    cfg_dir = f"{models_root}/yolopatch"
    dialect = "scales" if parse_version(version) >= (8, 0, 51) else "multiples"
    return Target(root=root, flavour="ultralytics", family="ultralytics", version=version,
                  parser_file="ultralytics/nn/tasks.py", modules_dir=modules_dir,
                  import_prefix=modules_dir.replace("/", "."), cfg_dir=cfg_dir, yaml_dialect=dialect)


def _yolov5(root: Path, package: str) -> Target:
    base = f"{package}/models" if package else "models"
    yolo_py = root / base / "yolo.py"
    source = yolo_py.read_bytes()
    if b"_forward_once" not in source:  # v6.0 introduced BaseModel._forward_once; earlier layouts differ
        raise RefusedError(f"{yolo_py} predates YOLOv5 v6.0 (no _forward_once): supported releases are v6.0 and later")
    if package:
        version = _dunder_version(root / package / "__init__.py") or "unknown"
        _check_supported("yolov5", version, "yolov5 (PyPI)")
        flavour = "yolov5-pypi"
    else:
        version = "checkout"
        flavour = "yolov5-upstream"
    return Target(root=root, flavour=flavour, family="yolov5", version=version,
                  parser_file=f"{base}/yolo.py", modules_dir=base, import_prefix=base.replace("/", "."),
                  cfg_dir=base, yaml_dialect="multiples")


def detect(root: Path) -> Target:
    root = Path(root)
    if not root.exists():
        raise RefusedError(f"{root} does not exist")
    if not root.is_dir():
        raise RefusedError(f"{root} is not a folder")
    root = root.resolve()
    if (root / "ultralytics" / "nn" / "tasks.py").is_file():
        return _ultralytics(root)
    if (root / "models" / "yolo.py").is_file():
        return _yolov5(root, "")
    if (root / "yolov5" / "models" / "yolo.py").is_file():
        return _yolov5(root, "yolov5")
    raise RefusedError(
        f"{root} is not a YOLO checkout: expected models/yolo.py (YOLOv5), yolov5/models/yolo.py "
        "(yolov5 package) or ultralytics/nn/tasks.py (ultralytics)"
    )
