"""Any timm model as a multi-output detection backbone.

``TimmBackbone`` wraps ``timm.create_model(..., features_only=True)``. The declared output channels
and strides come from timm's ``feature_info`` metadata, so building the backbone never runs a
forward pass. With ``out_indices=(1, 2, 3, 4)`` most timm CNNs (ResNets, MobileNets, EfficientNets,
ConvNeXts, ...) return their stride 4, 8, 16 and 32 feature maps.
"""

import timm
import torch
import torch.nn as nn

# Model names with these prefixes are resolved by timm from a hub or a local folder, so they are not
# in timm's registry of architecture names.
_EXTERNAL_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def _check_model_name(model_name):
    if not isinstance(model_name, str):
        raise TypeError(f"TimmBackbone: model_name must be a string, got {model_name!r}")
    if model_name.startswith(_EXTERNAL_PREFIXES) or timm.is_model(model_name):
        return
    close = timm.list_models(f"*{model_name.split('.')[0]}*")[:10]
    hint = f" Similar names: {', '.join(close)}." if close else ""
    raise ValueError(f"TimmBackbone: timm {timm.__version__} has no model named {model_name!r}.{hint}")


def _check_strides(model_name, strides):
    ok = all(s >= 2 and s & (s - 1) == 0 for s in strides) and all(a < b for a, b in zip(strides, strides[1:]))
    if not ok:
        raise ValueError(
            f"TimmBackbone: {model_name!r} with these out_indices gives strides {list(strides)}; a detection "
            "backbone needs strictly increasing powers of two (pick other out_indices or another model)"
        )


class TimmBackbone(nn.Module):
    """Feature pyramid of a timm model.

    Args:
        c1: input channels (timm adapts the stem when it is not 3).
        model_name: timm model name, e.g. "resnet18", "mobilenetv3_large_100", "efficientnet_b0".
        pretrained: load timm's pretrained weights (needs the network or a filled timm/HF cache).
        out_indices: which feature levels to return, in timm's numbering.
    """

    def __init__(self, c1=3, model_name="resnet18", pretrained=False, out_indices=(1, 2, 3, 4)):
        super().__init__()
        _check_model_name(model_name)
        out_indices = tuple(int(i) for i in out_indices)
        self.model_name = model_name
        self.in_channels = int(c1)
        self.model = self._create(model_name, bool(pretrained), out_indices, int(c1))
        info = self.model.feature_info
        self.feature_channels = tuple(int(c) for c in info.channels())
        self.feature_strides = tuple(int(s) for s in info.reduction())
        _check_strides(model_name, self.feature_strides)

    @staticmethod
    def _create(model_name, pretrained, out_indices, in_chans):
        kwargs = dict(pretrained=pretrained, features_only=True, out_indices=out_indices, in_chans=in_chans)
        if not pretrained:
            return timm.create_model(model_name, **kwargs)
        try:
            return timm.create_model(model_name, **kwargs)
        except Exception as e:  # download/cache failures surface as many exception types
            raise RuntimeError(
                f"TimmBackbone: could not load pretrained weights for {model_name!r} "
                f"({type(e).__name__}: {e}). Use pretrained=False (YAML args [{model_name!r}, False, "
                f"{list(out_indices)}]) or pre-download the weights into the timm / Hugging Face cache "
                "on a machine with network access."
            ) from e

    def forward(self, x):
        return list(self.model(x))

    @torch.no_grad()
    def fuse_batchnorms(self, fold_conv_bn):
        """Fold every BatchNorm fed directly by a convolution; returns how many were folded.

        timm keeps a conv and its norm as sibling attributes (ResNet's conv1 / bn1, EfficientNet's conv_dw /
        bn1, ConvNormAct's conv / bn), so the pairs are found from one eval forward: a BatchNorm whose input
        is the very tensor a Conv2d returned. The conv keeps its class (timm's Conv2dSame pads in forward) and
        takes the folded weights; the norm becomes what it applies after normalising (BatchNormAct2d's drop
        and activation, or nothing). If the outputs then differ (a conv output used elsewhere too), every
        change is undone and nothing is folded."""
        pairs = self._conv_norm_pairs()
        if not pairs:
            return 0
        probe = self._probe_input()
        before = [f.clone() for f in self.model(probe)]
        undo = []
        for conv, (parent, name, bn) in pairs:
            folded = fold_conv_bn(conv, bn)
            undo.append((conv, conv.weight, conv.bias, parent, name, bn))
            conv.weight = nn.Parameter(folded.weight.detach().clone(), requires_grad=False)
            conv.bias = nn.Parameter(folded.bias.detach().clone(), requires_grad=False)
            setattr(parent, name, _after_norm(bn))
        after = self.model(probe)
        if all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(after, before)):
            return len(pairs)
        for conv, weight, bias, parent, name, bn in reversed(undo):
            conv.weight, conv.bias = weight, bias
            setattr(parent, name, bn)
        return 0

    def _probe_input(self):
        weight = next(self.model.parameters())
        generator = torch.Generator().manual_seed(0)
        return torch.rand(1, self.in_channels, 64, 64, generator=generator).to(weight.device, weight.dtype)

    def _conv_norm_pairs(self):
        """(conv, (parent, attribute, norm)) for each foldable conv -> BatchNorm edge, from one eval forward."""
        parents = {id(child): (parent, name) for parent in self.model.modules() for name, child in parent.named_children()}
        produced, edges, hooks = {}, [], []

        def conv_out(module, args, output):
            produced[id(output)] = (module, output)  # the tensor is kept so that its id stays unique

        def norm_in(module, args):
            source = produced.get(id(args[0])) if args else None
            if source is not None:
                edges.append((source[0], module))

        for module in self.model.modules():
            if isinstance(module, nn.Conv2d):
                hooks.append(module.register_forward_hook(conv_out))
            elif _foldable_norm(module) and id(module) in parents:
                hooks.append(module.register_forward_pre_hook(norm_in))
        training = self.model.training
        self.model.eval()
        try:
            self.model(self._probe_input())
        finally:
            for hook in hooks:
                hook.remove()
            self.model.train(training)
        convs = {}
        for conv, bn in edges:
            convs.setdefault(id(conv), []).append((conv, bn))
        # a conv feeding two norms, or a norm called twice, is not a plain pair
        norms = [bn for _, bn in edges]
        return [(conv, (*parents[id(bn)], bn)) for group in convs.values() if len(group) == 1
                for conv, bn in group if norms.count(bn) == 1 and conv.out_channels == bn.num_features]


def _foldable_norm(module):
    """A BatchNorm2d with running statistics that only normalises, or timm's BatchNormAct2d (then drop, act)."""
    if not isinstance(module, nn.BatchNorm2d) or not module.track_running_stats or module.running_mean is None:
        return False
    return type(module) is nn.BatchNorm2d or (hasattr(module, "act") and hasattr(module, "drop")
                                                and type(module).forward.__qualname__ == "BatchNormAct2d.forward")


def _after_norm(bn):
    """What remains of a folded norm: nothing, or BatchNormAct2d's dropout and activation."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    return nn.Sequential(bn.drop, bn.act)
