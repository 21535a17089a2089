"""What each stock module does to the stride and the width of a feature map, read from its YAML row.

The facts mirror the targets' own code (each module's constructor and the target's `parse_model`):
a YAML row is `[from, repeats, Module, args]` and `args` are the YAML arguments, before parse_model
inserts the input width. Row comments such as `# 3-P3/8` are not used: they are often wrong.
tests/real/test_derive_strides.py holds every stride and width given here equal to the ones measured by
building every stock config of several releases with forward hooks.

Stride effects are a multiplier (`down`) or a divisor (`up`) of the input stride. Width rules:
  scaled  the output width is args[0], scaled by the width multiple (the target's width-scaled set)
  fixed   the output width is a constant taken from the args (not scaled)
  same    the output keeps the input width
  sum     the widths of all inputs add up (Concat)
  last    the width of the last input (CBFuse)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional


_LITERALS = {"None": None, "True": True, "False": False}


def _arg(args: list, i: int, default=None):
    """YAML argument i as parse_model sees it: the strings None / True / False are evaluated there."""
    value = args[i] if len(args) > i else None
    if isinstance(value, str):
        value = _LITERALS.get(value, value)
    return default if value is None else value


def _int_or_none(value) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True)
class Facts:
    down: Callable[[list], Optional[int]] = lambda args: 1   # output stride = input stride * down(args)
    up: Callable[[list], Optional[int]] = lambda args: 1     # output stride = input stride / up(args)
    width: str = "same"
    fixed: Callable[[list], Optional[int]] = lambda args: None  # the width of a "fixed" row
    repeats: bool = False      # parse_model passes the repeat count into the module (C2f, C3, …)
    head: str = ""             # the task of a model ending in this module ("" for a body module)
    keeps_context: bool = False  # a context block kept at the end of a replaced backbone (SPPF, C2PSA, …)
    same_width: bool = False   # residual: its input must already have its output width (PSA, C2PSA asserts c1 == c2)
    unsupported: str = ""      # why a base holding this module cannot be derived
    width_rule: str = ""       # a constraint on its width beyond the scaling (a copy at half width may break it)


def _conv_like(args):  # [c2, k, s, …]
    return _int_or_none(_arg(args, 2, 1))


def _maxpool(args):  # nn.MaxPool2d(kernel_size, stride=None, padding=0): stride defaults to the kernel
    return _int_or_none(_arg(args, 1, _arg(args, 0)))


def _upsample(args):  # nn.Upsample(size, scale_factor, mode): only a scale factor keeps strides known
    return None if _arg(args, 0) is not None else _int_or_none(_arg(args, 1))


def _resnet_layer(args):  # ResNetLayer(c1, c2, s=1, is_first=False, n=1, e=4): the first one is conv s2 + pool s2
    return 4 if _arg(args, 3, False) else _int_or_none(_arg(args, 2, 1))


def _resnet_width(args):
    c2 = _int_or_none(_arg(args, 1))
    return c2 if c2 is None or _arg(args, 3, False) else c2 * 4  # parse_model's own rule


SCALED = Facts(width="scaled")
SCALED_REPEATS = Facts(width="scaled", repeats=True)
SAME = Facts()
CONV_LIKE = Facts(down=_conv_like, width="scaled")
TEXT = "an open-vocabulary model fed with text embeddings, which a derived YAML cannot supply"
OTHER_TASK = "a task outside detect, segment, pose, obb and classify, which verify cannot check"

TABLE: dict[str, Facts] = {
    # convolutions [c2, k, s, …]
    "Conv": CONV_LIKE, "DWConv": CONV_LIKE, "GhostConv": CONV_LIKE, "RepConv": CONV_LIKE,
    "MixConv2d": CONV_LIKE, "CrossConv": CONV_LIKE, "GhostBottleneck": CONV_LIKE,
    "SCDown": CONV_LIKE,
    "Focus": Facts(down=lambda a: 2, width="scaled"),
    "ADown": Facts(down=lambda a: 2, width="scaled"),
    "AConv": Facts(down=lambda a: 2, width="scaled"),
    "ConvTranspose": Facts(up=lambda a: _int_or_none(_arg(a, 2, 2)), width="scaled"),
    "nn.ConvTranspose2d": Facts(up=lambda a: _int_or_none(_arg(a, 2, 1)), width="scaled"),
    "DWConvTranspose2d": Facts(up=lambda a: _int_or_none(_arg(a, 2, 1)), width="scaled"),
    # blocks that keep the stride
    "Bottleneck": SCALED, "SPP": Facts(width="scaled", keeps_context=True),
    "SPPF": Facts(width="scaled", keeps_context=True), "SPPELAN": Facts(width="scaled", keeps_context=True),
    "PSA": Facts(width="scaled", keeps_context=True, same_width=True),
    "C2PSA": Facts(width="scaled", repeats=True, keeps_context=True, same_width=True),
    "C2fPSA": Facts(width="scaled", repeats=True, keeps_context=True, same_width=True),
    "C3SPP": Facts(width="scaled", keeps_context=True),
    "BottleneckCSP": SCALED_REPEATS, "C1": SCALED_REPEATS, "C2": SCALED_REPEATS, "C2f": SCALED_REPEATS,
    "C3k2": SCALED_REPEATS, "C3": SCALED_REPEATS, "C3TR": SCALED_REPEATS, "C3Ghost": SCALED_REPEATS,
    "C3x": SCALED_REPEATS, "RepC3": SCALED_REPEATS, "C2fCIB": SCALED_REPEATS,
    "A2C2f": Facts(width="scaled", repeats=True,
                   width_rule="its area attention needs a multiple of 32 channels per block at every scale"),
    "RepNCSPELAN4": SCALED, "ELAN1": SCALED,
    "HGStem": Facts(down=lambda a: 4, width="fixed", fixed=lambda a: _int_or_none(_arg(a, 1))),
    "HGBlock": Facts(width="fixed", fixed=lambda a: _int_or_none(_arg(a, 1)), repeats=True),
    "ResNetLayer": Facts(down=_resnet_layer, width="fixed", fixed=_resnet_width),
    "AIFI": SAME,
    # layers that keep the width
    "nn.Upsample": Facts(up=_upsample),
    "nn.MaxPool2d": Facts(down=_maxpool),
    "nn.ZeroPad2d": SAME, "nn.Identity": SAME, "nn.BatchNorm2d": SAME,
    # several inputs
    "Concat": Facts(width="sum"),
    "CBFuse": Facts(width="last"),
    "CBLinear": Facts(width="fixed", fixed=lambda a: None),  # a list of widths, one per consumer
    # outputs of torchvision models: stride and width depend on the model named in the args
    "TorchVision": Facts(down=lambda a: None, width="fixed", fixed=lambda a: _int_or_none(_arg(a, 0))),
    "Index": Facts(down=lambda a: None, width="fixed", fixed=lambda a: _int_or_none(_arg(a, 0))),
    # heads
    "Detect": Facts(head="detect"), "Segment": Facts(head="segment"), "Pose": Facts(head="pose"),
    "OBB": Facts(head="obb"), "Segment26": Facts(head="segment"), "Pose26": Facts(head="pose"),
    "OBB26": Facts(head="obb"), "v10Detect": Facts(head="detect"), "RTDETRDecoder": Facts(head="detect"),
    "Classify": Facts(head="classify"),
    "WorldDetect": Facts(head="detect", unsupported=TEXT), "YOLOEDetect": Facts(head="detect", unsupported=TEXT),
    "YOLOESegment": Facts(head="segment", unsupported=TEXT),
    "YOLOESegment26": Facts(head="segment", unsupported=TEXT),
    "C2fAttn": Facts(width="scaled", repeats=True, unsupported=TEXT),
    "ImagePoolingAttn": Facts(down=lambda a: None, unsupported=TEXT),  # its output is text features, not a map
    "Depth": Facts(head="depth", unsupported=OTHER_TASK),
    "SemanticSegment": Facts(head="semantic", unsupported=OTHER_TASK),
}

# Heads that pool the whole map (any stride will do): a classifier reads the backbone's deepest output.
GLOBAL_HEADS = frozenset({"Classify"})


def facts(module: str) -> Optional[Facts]:
    if module.startswith("torch.nn."):
        module = module[len("torch."):]
    return TABLE.get(module)
