"""MobileNetV2 backbone (Sandler et al., arXiv:1801.04381) returning a feature pyramid.

Built from inverted residual blocks with linear bottlenecks: a 1x1 expansion with ReLU6, a 3x3
depthwise conv with ReLU6 and a linear 1x1 projection; a shortcut joins the narrow ends when the
block keeps both resolution and width.
"""

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), Table 2 of the paper.
BLOCK_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
OUT_STRIDES = (4, 8, 16, 32)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to the nearest multiple of `divisor`, never losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def init_weights(model: nn.Module) -> None:
    """torchvision's initialisation of its MobileNets: conv weights Kaiming normal (fan_out = out_channels * k * k,
    ReLU gain), conv biases 0, BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c2)]
    if act:
        # In place, as in torchvision/timm: BatchNorm's backward needs its input, not the output this
        # overwrites, and an out-of-place activation allocates a full-size tensor per layer (about a
        # quarter slower at 640x640 on CPU, see tests/benchmarks/bench_modules.py).
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 (stride s) -> linear project (1x1), plus identity shortcut if shapes match."""

    def __init__(self, c1: int, c2: int, s: int = 1, t: int = 6):
        super().__init__()
        hidden = c1 * t
        layers = [conv_bn(c1, hidden)] if t != 1 else []  # t == 1 has nothing to expand
        layers += [conv_bn(hidden, hidden, 3, s, groups=hidden), conv_bn(hidden, c2, act=False)]
        self.conv = nn.Sequential(*layers)
        self.shortcut = s == 1 and c1 == c2

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.shortcut else y


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor with outputs at strides 4, 8, 16 and 32.

    Channels (24, 32, 96, 320) at width 1.0: each output is the last block at its resolution; the
    classifier's final 1x1 conv to 1280 channels is not part of the backbone. `width` scales every
    layer (rounded to multiples of 8). `weights`: a checkpoint of timm's mobilenetv2_* or torchvision's
    mobilenet_v2 (a .pth / .pt / .safetensors file, or a timm tag in the local cache) to load; what was
    loaded is recorded in `loaded_weights`.
    """

    def __init__(self, c1: int = 3, width: float = 1.0, weights=None):
        super().__init__()
        c_in = make_divisible(STEM_CHANNELS * width)
        # A new stage starts at every stride-2 layer, so each stage ends with the last block of one
        # resolution; stage 0 (stride 2) is computed but not returned.
        stages = [[conv_bn(c1, c_in, 3, 2)]]
        channels, strides = [c_in], [2]
        for t, c, n, s in BLOCK_SETTINGS:
            c_out = make_divisible(c * width)
            for i in range(n):
                stride = s if i == 0 else 1
                if stride == 2:
                    stages.append([])
                    strides.append(strides[-1] * 2)
                    channels.append(c_out)
                stages[-1].append(InvertedResidual(c_in, c_out, stride, t))
                channels[-1] = c_out
                c_in = c_out
        self.stages = nn.ModuleList(nn.Sequential(*layers) for layers in stages)
        self.out_indices = tuple(strides.index(s) for s in OUT_STRIDES)
        self.feature_channels = tuple(channels[i] for i in self.out_indices)
        self.feature_strides = OUT_STRIDES
        init_weights(self)
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    def reference_layouts(self) -> dict:
        """Our module names -> timm's mobilenetv2_* and torchvision's mobilenet_v2 (and their heads)."""
        timm = {"stages.0.0.0": "conv_stem", "stages.0.0.1": "bn1"}
        tv = {"stages.0.0.0": "features.0.0", "stages.0.0.1": "features.0.1"}
        blocks = [f"stages.{s}.{i}" for s, stage in enumerate(self.stages) for i, block in enumerate(stage)
                  if isinstance(block, InvertedResidual)]
        rows = [(r, j) for r, (_, _, n, _) in enumerate(BLOCK_SETTINGS) for j in range(n)]  # timm's blocks.r.j
        for k, (ours, (r, j)) in enumerate(zip(blocks, rows)):
            parts = len(self.get_submodule(ours).conv)  # 2 without expansion (t = 1), else 3
            timm_names = ["conv_dw", "bn1", "conv_pw", "bn2"] if parts == 2 else \
                ["conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3"]
            for m in range(parts):
                timm[f"{ours}.conv.{m}.0"] = f"blocks.{r}.{j}.{timm_names[2 * m]}"
                timm[f"{ours}.conv.{m}.1"] = f"blocks.{r}.{j}.{timm_names[2 * m + 1]}"
                # torchvision's last part is a bare conv and BatchNorm, the others conv-norm-activation blocks
                last = m == parts - 1
                tv[f"{ours}.conv.{m}.0"] = f"features.{k + 1}.conv.{m}" + ("" if last else ".0")
                tv[f"{ours}.conv.{m}.1"] = f"features.{k + 1}.conv.{m + 1 if last else m}" + ("" if last else ".1")
        return {
            "timm mobilenetv2": (timm, ("conv_head.", "bn2.", "classifier.")),
            "torchvision mobilenet_v2": (tv, (f"features.{len(blocks) + 1}.", "classifier.")),
        }

    def forward(self, x: torch.Tensor) -> list:
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outputs.append(x)
        return outputs
