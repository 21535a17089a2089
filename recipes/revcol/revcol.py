"""Reversible Column Networks (RevCol, arXiv:2212.11696) as a multi-output detection backbone.

A RevCol backbone is a patchify stem followed by N identical *columns*. Every column has four levels
(strides 4, 8, 16, 32) built from ConvNeXt blocks. Level ``i`` of column ``k`` computes

    c_i(k) = alpha_i * c_i(k-1) + F_i(down(c_{i-1}(k)), up(c_{i+1}(k-1)))

where ``down`` is a stride-2 patch-merge of the finer level of the *same* column (the stem output
for level 0) and ``up`` is a linear channel projection plus 2x nearest upsampling of the coarser
level of the *previous* column. Because ``alpha_i`` is a learnable per-channel scale that is kept
away from zero, the relation can be inverted:

    c_i(k-1) = (c_i(k) - F_i(...)) / alpha_i

so a column's inputs can be recomputed from its outputs. With ``save_memory=True`` each column runs
inside ``_ReversibleColumn``, an autograd function that keeps only the column's outputs and
recomputes everything else in the backward pass. It is the default, as in the reference training
configs and the paper's memory claim; ``save_memory=False`` uses ordinary autograd, which is faster
and gives the same gradients (up to float round-off of the inversion).

The backbone returns the four levels of the last column. Parameter names and shapes are those of the
reference implementation (megvii-research/RevCol), including the first column's four alphas, which
scale a previous column that does not exist (zeros there): the reference's checkpoints load strictly.
"""

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

# |alpha| is clamped to at least this value so that dividing by it in the reverse pass stays stable.
ALPHA_MIN = 1e-3

# name: (channels per level, ConvNeXt blocks per level, number of columns, default drop-path rate)
# Drop-path defaults are those of the reference's COCO detection configs (Detection/configs/revcol/
# cascade_mask_rcnn_revcol_*_3x_*.py: tiny 0.3, small 0.4, base 0.4, large 0.5); xlarge has no detection
# config and keeps its model builder's default (0.5).
VARIANTS = {
    "tiny": ((64, 128, 256, 512), (2, 2, 4, 2), 4, 0.3),
    "small": ((64, 128, 256, 512), (2, 2, 4, 2), 8, 0.4),
    "base": ((72, 144, 288, 576), (1, 1, 3, 2), 16, 0.4),
    "large": ((128, 256, 512, 1024), (1, 2, 6, 2), 8, 0.5),
    "xlarge": ((224, 448, 896, 1792), (1, 2, 6, 2), 8, 0.5),
}


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of the samples in a batch."""

    def __init__(self, p=0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path rate must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        # One Bernoulli draw per sample, broadcast over the remaining dimensions. The draw uses the
        # global RNG of x's device, which the reversible backward restores before recomputing.
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (or the last axis with channels_last)."""

    def __init__(self, channels, eps=1e-6, channels_last=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels_last = channels_last

    def forward(self, x):
        if self.channels_last:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise kxk conv, LayerNorm, pointwise MLP (4x expansion, GELU), layer scale, residual."""

    def __init__(self, channels, kernel_size=3, expansion=4, layer_scale=1e-6, drop_path=0.0):
        super().__init__()
        hidden = expansion * channels
        self.dwconv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        # The pointwise convs run as Linear layers on a channels-last view (same maths as 1x1 convs).
        self.pwconv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, channels)
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class UpSampleConvnext(nn.Module):
    """Project the coarser level's channels onto this level's (Linear + LayerNorm), then upsample."""

    def __init__(self, ratio, in_channels, out_channels):
        super().__init__()
        self.channel_reschedule = nn.Sequential(
            nn.Linear(in_channels, out_channels),
            LayerNorm2d(out_channels, channels_last=True),
        )
        self.upsample = nn.Upsample(scale_factor=2**ratio, mode="nearest")

    def forward(self, x):
        x = self.channel_reschedule(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.upsample(x)


class Fusion(nn.Module):
    """Input of one level: finer level of this column (downsampled) + coarser level of the previous one.

    Level 0 takes the stem output as it is. The top level has no coarser neighbour, and the first
    column has no previous column, so neither of them owns an ``up`` branch.
    """

    def __init__(self, level, channels, first_col):
        super().__init__()
        self.level = level
        self.first_col = first_col
        if level == 0:
            self.down = nn.Identity()
        else:
            self.down = nn.Sequential(
                nn.Conv2d(channels[level - 1], channels[level], kernel_size=2, stride=2),
                LayerNorm2d(channels[level]),
            )
        self.has_up = not first_col and level < len(channels) - 1
        if self.has_up:
            self.up = UpSampleConvnext(1, channels[level + 1], channels[level])

    def forward(self, c_down, c_up):
        x = self.down(c_down)
        return x + self.up(c_up) if self.has_up else x


class Level(nn.Module):
    """F_i of the column equation: a Fusion followed by a stack of ConvNeXt blocks."""

    def __init__(self, level, channels, layers, kernel_size, first_col, dp_rates):
        super().__init__()
        self.fusion = Fusion(level, channels, first_col)
        start = sum(layers[:level])
        self.blocks = nn.Sequential(
            *(
                ConvNeXtBlock(channels[level], kernel_size, drop_path=dp_rates[start + j])
                for j in range(layers[level])
            )
        )

    def forward(self, c_down, c_up):
        return self.blocks(self.fusion(c_down, c_up))


# ----------------------------------------------------------------------------------------------
# Reversible autograd function
# ----------------------------------------------------------------------------------------------
def _cuda_devices(tensors):
    return sorted({t.get_device() for t in tensors if isinstance(t, torch.Tensor) and t.is_cuda})


def _rng_snapshot(cuda_devices):
    cuda_states = []
    for device in cuda_devices:
        with torch.cuda.device(device):
            cuda_states.append(torch.cuda.get_rng_state())
    return torch.get_rng_state(), cuda_states


def _rng_restore(snapshot, cuda_devices):
    cpu_state, cuda_states = snapshot
    torch.set_rng_state(cpu_state)
    for device, state in zip(cuda_devices, cuda_states):
        with torch.cuda.device(device):
            torch.cuda.set_rng_state(state)


def _autocast_state(device_type):
    """(enabled, dtype) of autocast for a device type, on both current and older torch releases."""
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):
        if device_type == "cuda":
            return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()


def _autocast_like(stack, states):
    """Re-enter the autocast state that was active during the forward pass."""
    for device_type, (enabled, dtype) in states.items():
        if enabled:
            stack.enter_context(torch.autocast(device_type=device_type, dtype=dtype))


def _leaf(t):
    """A fresh graph leaf holding t's values, so recomputation can be differentiated in isolation."""
    return t.detach().requires_grad_(True)


class _ReversibleColumn(torch.autograd.Function):
    """Run one column without keeping its internal activations.

    Inputs (after the non-tensor ``column``): the stem output ``x``, the previous column's four
    levels and this column's four alphas (both omitted for the first column, whose alphas scale
    nothing), then the level parameters.
    Only ``x`` and the four outputs are saved. The backward pass walks the levels from the top
    down: it recomputes ``F_i`` with the RNG state recorded in the forward pass (so drop path draws
    the same masks), back-propagates through it, and recovers the previous column's level ``i``
    by inverting ``c_i(k) = alpha_i * c_i(k-1) + F_i``, which the next (lower) level needs as its
    ``up`` input.
    """

    @staticmethod
    def forward(ctx, column, x, *rest):
        n = column.num_levels
        prev = () if column.first_col else rest[:n]
        alphas = column.alphas
        ctx.column = column
        ctx.num_prev = len(prev)
        ctx.prev_dtypes = [p.dtype for p in prev]
        ctx.cuda_devices = _cuda_devices((x,) + tuple(prev))
        ctx.autocast = {"cpu": _autocast_state("cpu")}
        if torch.cuda.is_available():
            ctx.autocast["cuda"] = _autocast_state("cuda")
        ctx.rng = []
        with torch.no_grad():
            outs = []
            for i, level in enumerate(column.levels):
                ctx.rng.append(_rng_snapshot(ctx.cuda_devices))
                out = level(x if i == 0 else outs[i - 1], prev[i + 1] if prev and i + 1 < n else None)
                outs.append(out + alphas[i] * prev[i] if prev else out)
        ctx.save_for_backward(x, *outs)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grad_outs):
        column = ctx.column
        n = column.num_levels
        first_col = ctx.num_prev == 0
        x, *outs = ctx.saved_tensors
        # grad_down[i]: gradient w.r.t. the down input of level i (x for level 0, this column's
        # level i-1 otherwise). Walking top-down, level i+1 has already filled grad_down[i+1]
        # (its contribution to level i's output) by the time level i is processed.
        grad_down = [None] * n
        grad_prev = [None] * n
        grad_alpha = [None] * n
        param_grads = {}
        prev_up = None  # the previous column's level i+1, reconstructed: the up input of level i
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.random.fork_rng(devices=ctx.cuda_devices))
            stack.enter_context(torch.enable_grad())
            _autocast_like(stack, ctx.autocast)
            for i in reversed(range(n)):
                g = grad_outs[i] if grad_outs[i] is not None else torch.zeros_like(outs[i])
                if i + 1 < n and grad_down[i + 1] is not None:
                    g = g + grad_down[i + 1]
                down = _leaf(x if i == 0 else outs[i - 1])
                up = _leaf(prev_up) if prev_up is not None else None
                level = column.levels[i]
                params = [p for p in level.parameters() if p.requires_grad]
                _rng_restore(ctx.rng[i], ctx.cuda_devices)
                f = level(down, up)
                inputs = [down] + ([up] if up is not None else [])
                grads = torch.autograd.grad(f, inputs + params, g, allow_unused=True)
                grad_down[i] = grads[0]
                if up is not None and grads[1] is not None:
                    grad_prev[i + 1] = grad_prev[i + 1] + grads[1]
                param_grads.update((id(p), gp) for p, gp in zip(params, grads[len(inputs):]))
                if first_col:
                    continue
                alpha = column.alphas[i]
                with torch.no_grad():
                    # Invert c_i(k) = alpha_i * c_i(k-1) + F_i (in the dtype the input had).
                    prev_up = ((outs[i] - f) / alpha).to(ctx.prev_dtypes[i])
                    grad_alpha[i] = (g * prev_up).sum(dim=(0, 2, 3), keepdim=True)
                    grad_prev[i] = g * alpha
        grad_params = [param_grads.get(id(p)) for p in column.shared_parameters()]
        if first_col:
            return (None, grad_down[0], *grad_params)
        return (None, grad_down[0], *grad_prev, *grad_alpha, *grad_params)


# ----------------------------------------------------------------------------------------------
# Column and backbone
# ----------------------------------------------------------------------------------------------
class SubNet(nn.Module):
    """One column: four levels plus the learnable per-channel reversible scales alpha0..alpha3."""

    def __init__(self, channels, layers, kernel_size, first_col, dp_rates, save_memory=True):
        super().__init__()
        self.first_col = first_col
        self.save_memory = save_memory
        self.num_levels = len(channels)
        for i, c in enumerate(channels):
            # Every column owns alpha0..3, as in the reference, so that its checkpoints load strictly. The
            # first column's scale a previous column that does not exist (zeros in the reference): they never
            # change the output, and they are frozen so that optimisers and gradient checks leave them alone.
            setattr(self, f"alpha{i}", nn.Parameter(torch.full((1, c, 1, 1), 0.5), requires_grad=not first_col))
            setattr(self, f"level{i}", Level(i, channels, layers, kernel_size, first_col, dp_rates))

    @property
    def alphas(self):
        return [getattr(self, f"alpha{i}") for i in range(self.num_levels)]

    @property
    def levels(self):
        return [getattr(self, f"level{i}") for i in range(self.num_levels)]

    def shared_parameters(self):
        """Level parameters in a fixed order (the tensors handed to the reversible function)."""
        return [p for level in self.levels for p in level.parameters()]

    @torch.no_grad()
    def _clamp_alphas(self):
        # Keep |alpha| >= ALPHA_MIN while preserving its sign (zero maps to +ALPHA_MIN). Writes go
        # through .data, and only when needed, so a graph that saved alpha is not invalidated.
        for a in self.alphas:
            small = a.abs() < ALPHA_MIN
            if small.any():
                floor = torch.where(a < 0, -torch.ones_like(a), torch.ones_like(a)) * ALPHA_MIN
                a.data.copy_(torch.where(small, floor, a))

    def forward(self, x, prev):
        """x: stem output; prev: the previous column's levels, or None for the first column."""
        if self.training:
            # The optimizer only changes alpha during training, so clamping there is enough and
            # keeps eval/export free of in-place parameter writes.
            self._clamp_alphas()
        if self.save_memory and torch.is_grad_enabled():
            prev_args = () if self.first_col else (*prev, *self.alphas)
            outs = list(_ReversibleColumn.apply(self, x, *prev_args, *self.shared_parameters()))
        else:
            if self.first_col:
                prev = None
            outs = []
            for i, level in enumerate(self.levels):
                up = prev[i + 1] if prev is not None and i + 1 < self.num_levels else None
                out = level(x if i == 0 else outs[i - 1], up)
                outs.append(out if prev is None else self.alphas[i] * prev[i] + out)
        if self.first_col and torch.is_grad_enabled() and any(a.requires_grad for a in self.alphas):
            # A trainer that unfreezes every parameter (ultralytics and YOLOv5 do) must still find these in the
            # graph, or DDP without find_unused_parameters stops: they get the zero gradient the reference gives
            # them (alpha * 0).
            outs = [o + (a * 0).to(o.dtype) for o, a in zip(outs, self.alphas)]
        return outs


class RevCol(nn.Module):
    """RevCol backbone returning the last column's levels at strides 4, 8, 16 and 32.

    Args:
        c1: input channels.
        channels: channels of the four levels.
        layers: ConvNeXt blocks per level (in every column).
        num_subnet: number of columns.
        kernel_size: depthwise kernel size of the ConvNeXt blocks.
        drop_path: maximum stochastic-depth rate, spread linearly over the blocks of a column.
        save_memory: use the reversible backward (recompute instead of storing activations); default on.
        weights: a checkpoint of the reference (megvii-research/RevCol, e.g. revcol_tiny_1k.pth; its
            classification heads and decoders are left out), a .pth / .pt / .safetensors file, to load; what was
            loaded is recorded in `loaded_weights`.
    """

    def __init__(self, c1=3, channels=(64, 128, 256, 512), layers=(2, 2, 4, 2), num_subnet=4,
                 kernel_size=3, drop_path=0.0, save_memory=True, weights=None):
        super().__init__()
        channels, layers = tuple(int(c) for c in channels), tuple(int(n) for n in layers)
        if len(channels) != 4 or len(layers) != 4:
            raise ValueError("RevCol needs exactly four levels (channels and layers of length 4)")
        self.num_subnet = int(num_subnet)
        if self.num_subnet < 1:
            raise ValueError("RevCol needs at least one column")
        self.feature_channels = channels
        self.feature_strides = (4, 8, 16, 32)
        self.stem = nn.Sequential(
            nn.Conv2d(c1, channels[0], kernel_size=4, stride=4),
            LayerNorm2d(channels[0]),
        )
        total = sum(layers)
        dp_rates = [drop_path * j / (total - 1) if total > 1 else 0.0 for j in range(total)]
        for k in range(self.num_subnet):
            self.add_module(f"subnet{k}", SubNet(channels, layers, kernel_size, k == 0, dp_rates, save_memory))
        self.apply(self._init_weights)
        self.loaded_weights = None
        if weights:  # the helper yolopatch ships beside this file (recipe.toml lists it)
            from .yolopatch_weights import load_reference_weights
            self.loaded_weights = load_reference_weights(self, weights)

    @staticmethod
    def reference_layouts() -> dict:
        """The reference's names are ours; its classifiers (cls, cls_blocks) and decoders are not the backbone."""
        return {"official RevCol": ({"": ""}, ("cls.", "cls_blocks.", "decoder_blocks."))}

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def save_memory(self):
        return self.subnet0.save_memory

    @save_memory.setter
    def save_memory(self, value):
        for k in range(self.num_subnet):
            getattr(self, f"subnet{k}").save_memory = bool(value)

    def forward(self, x):
        x = self.stem(x)
        levels = None
        for k in range(self.num_subnet):
            levels = getattr(self, f"subnet{k}")(x, levels)
        return list(levels)


class _RevColVariant(RevCol):
    """A named configuration from ``VARIANTS``; YAML args: [drop_path, save_memory, kernel_size, weights]."""

    variant = "tiny"

    def __init__(self, c1=3, drop_path=None, save_memory=True, kernel_size=3, weights=None):
        channels, layers, num_subnet, default_dp = VARIANTS[self.variant]
        if drop_path is None:
            drop_path = default_dp
        super().__init__(c1, channels, layers, num_subnet, kernel_size, drop_path, save_memory, weights)


# The names YAMLs use (lower case, as in the reference model builders).
class revcol_tiny(_RevColVariant):  # noqa: N801
    variant = "tiny"


class revcol_small(_RevColVariant):  # noqa: N801
    variant = "small"


class revcol_base(_RevColVariant):  # noqa: N801
    variant = "base"


class revcol_large(_RevColVariant):  # noqa: N801
    variant = "large"


class revcol_xlarge(_RevColVariant):  # noqa: N801
    variant = "xlarge"
