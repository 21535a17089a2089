"""What the YOLOv5 packages' own trainers need from their environment, for tests that train with them.

The 7.0.x package's train.py imports roboflow at the top and calls huggingface_hub < 0.25
(`huggingface_hub.utils._errors`); 6.x's loggers import tensorboard unconditionally; the metrics call
numpy.trapz, which numpy 2 removed; train.py and detect.py load checkpoints with torch.load without
weights_only, which torch >= 2.6 refuses. A user of the package fixes that with `pip install roboflow
"huggingface_hub<0.25" tensorboard "numpy<1.24"` and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (6.0 also calls
np.int, removed in numpy 1.24). The test environment cannot downgrade numpy (pandas and opencv here are built
for numpy 2), so it installs the pinned packages into a folder of the test cache, put first on PYTHONPATH,
with a sitecustomize that gives numpy those old names back.
Nothing is installed into the interpreter itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import upstream

PACKAGES = ("roboflow==1.7.3", "requests-toolbelt==1.0.0", "filetype==1.2.0", "pillow-avif-plugin==1.6.0",
            "huggingface-hub==0.24.7", "tensorboard==2.21.0", "absl-py==2.5.1")
SITECUSTOMIZE = '''\
# what `pip install "numpy<1.24"` gives back: numpy 2 removed trapz (YOLOv5's metrics call it) and
# numpy 1.24 the aliases of builtin types (YOLOv5 6.0 calls np.int)
import numpy
for name, value in (("trapz", getattr(numpy, "trapezoid", None)), ("int", int), ("float", float),
                    ("bool", bool), ("object", object)):
    if value is not None and name not in vars(numpy):
        setattr(numpy, name, value)
'''


def yolov5_training_site() -> Path:
    """The folder holding the packages above (installed once into the test cache)."""
    folder = upstream.cache_dir() / "yolov5-training-site"
    marker = folder / ".complete"
    with upstream.cache_lock():
        if not marker.is_file() or marker.read_text(encoding="utf-8") != "\n".join(PACKAGES) + "\n":
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
                            *PACKAGES], check=True)
            marker.write_text("\n".join(PACKAGES) + "\n", encoding="utf-8")
        sitecustomize = folder / "sitecustomize.py"
        if not sitecustomize.is_file() or sitecustomize.read_text(encoding="utf-8") != SITECUSTOMIZE:
            sitecustomize.write_text(SITECUSTOMIZE, encoding="utf-8")
    return folder


def yolov5_training_env(base: dict) -> dict:
    """`base` (an environment, which verify's runners inherit) as a YOLOv5 package user's would be."""
    site = str(yolov5_training_site())
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join([site] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return env


def users_fixes(spec: str, base: dict) -> dict:
    """`base` fixed as verify's messages tell a user for this machine's faults in older releases:
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (releases calling torch.load without weights_only), and for YOLOv5
    (`yolov5==X` or `upstream==X`) the packages its trainer needs."""
    env = {**base, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    return yolov5_training_env(env) if spec.startswith(("yolov5==", "upstream==")) else env
