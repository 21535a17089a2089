"""What crosses the process boundary between `yolopatch verify` and its runner, defined once.

The orchestrator (yolopatch/verify/__init__.py) writes a `Spec` as JSON; the runner (the `runner`
package beside this file) reads it in the target's interpreter, streams progress lines starting with
PROGRESS_PREFIX, and writes a `RunnerOutput` as JSON. Both sides import this module, so it uses the
standard library only and imports nothing else: the runner loads it in an interpreter that may not have
yolopatch installed (see runner/__main__.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace

PROGRESS_PREFIX = "@yolopatch-verify "

# The ladder, cheapest first. Target-level steps run once per checkout, model steps once per model.
STEPS = ("import", "names", "build", "shapes", "stock", "loss", "figures", "train", "amp", "fuse", "reload", "export",
         "fit")
TARGET_STEPS = ("import", "stock", "loss")   # loss: only when an IoU-loss recipe is applied
MODEL_STEPS = ("names", "build", "shapes", "figures", "train", "amp", "fuse", "reload", "export", "fit")
QUICK_STEPS = ("import", "names", "build", "shapes", "loss", "figures")
ON_REQUEST = ("export", "fit")   # only with --export onnx / --fit
# they exercise module code, which does not change with scale
FIRST_SCALE_ONLY = ("train", "amp", "fuse", "reload", "export", "fit")

PASSED, FAILED, SKIPPED, NOT_RUN = "passed", "failed", "skipped", "not-run"
STATUSES = (PASSED, FAILED, SKIPPED, NOT_RUN)

MODES = ("verify", "stock", "reload", "fit")   # fit: one stage (train / predict) of `verify --fit` for one model

# Tasks verify knows, and the head module (last YAML row) that marks each. A head class derived from one of
# these (a recipe's own head) has its base's task. World / YOLOE (text-conditioned) and the YOLO26 depth and
# semantic heads are recognised so that verify can say why it does not run them.
TASKS = ("detect", "segment", "pose", "obb", "classify", "rtdetr")
HEAD_TASKS = {
    "Detect": "detect", "v10Detect": "detect",
    "Segment": "segment", "Segment26": "segment",
    "Pose": "pose", "Pose26": "pose",
    "OBB": "obb", "OBB26": "obb",
    "Classify": "classify",
    "RTDETRDecoder": "rtdetr",
    "WorldDetect": "world", "YOLOEDetect": "yoloe", "YOLOESegment": "yoloe", "YOLOESegment26": "yoloe",
    "Depth": "depth", "SemanticSegment": "semantic",
}
UNVERIFIED_TASKS = {
    "world": "a YOLO-World model (text-conditioned head WorldDetect): it needs a CLIP text encoder, downloaded "
             "on first use",
    "yoloe": "a YOLOE model (text/visual-prompt head): it needs a MobileCLIP text encoder, downloaded on first use",
    "depth": "a YOLO26 depth-estimation model (Depth head)",
    "semantic": "a YOLO26 semantic-segmentation model (SemanticSegment head)",
}


class StepFailure(Exception):
    """A check found a fault; the message names it. Raised by the runner's steps, turned into a failed step."""


def task_of_head(name: str) -> str | None:
    """The task of a head module name (a YAML row's module, without `nn.` prefixes); None when unknown."""
    return HEAD_TASKS.get(str(name).rsplit(".", 1)[-1])


_ROW_MODULE = re.compile(r"\[\s*(?:-?\d+|\[[-\d,\s]*\])\s*,\s*-?\d+\s*,\s*([A-Za-z_][\w.]*)\s*,")


def guess_task(yaml_text: str) -> str:
    """The task of a model YAML from its text, without a YAML parser: the head of its last row that names one
    (the orchestrator's guess for models the runner never reported; the runner decides from the parsed YAML)."""
    found = [task_of_head(m) for m in _ROW_MODULE.findall(yaml_text)]
    found = [t for t in found if t]
    return found[-1] if found else "detect"


def step_record(status: str, message: str, seconds: float = 0.0, **extra) -> dict:
    """One step's entry in a report: status, message, seconds (and a `cause` when it failed)."""
    return {"status": status, "message": message, "seconds": round(float(seconds), 2), **extra}


def model_record(name: str, yaml: str, scale, kind: str, source: str) -> dict:
    """A model's entry in the report with every documented key (README, JSON schema); steps filled later."""
    return {"name": name, "yaml": yaml, "scale": scale, "kind": kind, "source": source, "params": None,
            "gflops": None, "strides": None, "output_shapes": None, "new_modules": [], "steps": {}}


# the spec ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleDeclaration:
    """A module class an applied recipe declares (recipe.toml): its role and, for backbones, its outputs."""
    role: str
    channels: tuple = ()
    strides: tuple = ()
    recipe: str = ""
    local: bool = False   # from the checkout's own recipes (yolopatch add): folded as far as its structure allows


@dataclass(frozen=True)
class ModelYaml:
    path: str          # absolute
    source: str        # the recipe that wrote it, or "--yaml"


@dataclass(frozen=True)
class StockModel:
    name: str          # e.g. "yolov8n-seg"
    yaml: str          # relative to the root
    scale: str | None  # None: the YAML is per-scale (yolov8n.yaml) or declares none
    task: str
    end2end: bool = False   # a YOLO26-style head (end2end key in the YAML)


@dataclass(frozen=True)
class Spec:
    """Everything one runner process is told. `mode`: verify (the ladder on the checkout), stock (only the
    stock fingerprints, on the pristine copy) or reload (the fresh interpreter that loads checkpoints)."""
    mode: str
    root: str
    family: str                      # ultralytics | yolov5
    flavour: str                     # ultralytics | yolov5-pypi | yolov5-upstream
    version: str
    package: str                     # what `import` loads: ultralytics | yolov5 | models
    parser_module: str               # ultralytics.nn.tasks | yolov5.models.yolo | models.yolo
    package_prefix: str = ""         # "yolov5." for the PyPI layout
    import_hint: str = ""            # the one line that makes Python import this checkout (run_hint)
    ddp_note: str = ""               # why multi-GPU workers would import another copy (ddp.worker_note), or ""
    hyp_file: str | None = None      # YOLOv5 hyperparameters (hyp.scratch-low.yaml)
    steps: tuple = ()
    reasons: dict = field(default_factory=dict)     # step -> why it is not run
    yamls: tuple = ()                                # ModelYaml
    stock: tuple = ()                                # StockModel: fingerprinted for the `stock` step
    task_stock: tuple = ()                           # StockModel: the stock model of each task, for causes
    modules: dict = field(default_factory=dict)      # class name -> ModuleDeclaration
    loss: dict = field(default_factory=dict)         # the applied IoU-loss recipe, for the `loss` step: recipe,
    #   function, options, module (dotted detection loss module), xywh (its boxes' format), rtdetr_module ("": none)
    new_module_files: tuple = ()                     # dotted names of the module files the tool added
    shadow_check: bool = True
    one_scale: bool = False
    shard: tuple = (1, 1)                            # (K, N): models K, K+N, K+2N, ... (1-based)
    work_dir: str = ""
    result: str = ""
    items_file: str = ""                             # reload mode: the checkpoints to load, once saved
    parent_pid: int = 0                              # reload mode: stop waiting when the parent is gone

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in raw.items() if k in known}
        data["steps"] = tuple(data.get("steps") or ())
        data["yamls"] = tuple(ModelYaml(**y) for y in data.get("yamls") or ())
        data["stock"] = tuple(StockModel(**s) for s in data.get("stock") or ())
        data["task_stock"] = tuple(StockModel(**s) for s in data.get("task_stock") or ())
        data["modules"] = {name: ModuleDeclaration(**{**d, "channels": tuple(d.get("channels") or ()),
                                                      "strides": tuple(d.get("strides") or ())})
                           for name, d in (data.get("modules") or {}).items()}
        data["new_module_files"] = tuple(data.get("new_module_files") or ())
        data["loss"] = dict(data.get("loss") or {})
        data["shard"] = tuple(data.get("shard") or (1, 1))
        return cls(**data)

    def but(self, **changes) -> "Spec":
        return replace(self, **changes)


# the result -------------------------------------------------------------------------------------------------
@dataclass
class RunnerOutput:
    """What a runner writes to `spec.result`.

    runner: {"python", "version", "torch", "threads"} of the interpreter · checks: {"import": step record}
    notes: warnings · stock: stock model name -> fingerprint {"params", "digest", "checksum", "output_shape"}
    or {"error"} · models: model records (model_record) · reload (reload mode only): model name -> step record
    fit (fit mode only): the stage's outcome
    """
    runner: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    stock: dict = field(default_factory=dict)
    models: list = field(default_factory=list)
    reload: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)        # fit mode: {"status", "phase", "message", "seconds", ...}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "RunnerOutput":
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
