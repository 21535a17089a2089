"""Each class's role, read from its constructor and forward (or given with --role CLASS=ROLE).

  (c1, c2, ...)            a channel pair first             -> block, width-scaled like C2f
  (c1, c2, n, ...)         a repeat count right after it    -> block that repeats (repeats = true)
  (c1, ...)                one channel parameter first      -> same-width (upsample when it takes a `scale`)
  (c1, ...) + forward returning several maps                -> backbone (channels and strides measured)
  (...)                    no channel parameter             -> pass-through (imported only)

Classes the file's other classes use are helpers and are not registered. A class that fits none of these
(a channel parameter that is not first, an output-channel parameter on a multi-output forward, a
constructor that cannot be read) is ambiguous: `add` refuses and says which --role to pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import roles
from ..errors import RefusedError, UsageError
from .scan import ClassInfo, Scan

IN_CHANNELS = {"c1", "in_channels", "inp", "ch_in", "in_ch", "dim", "in_dim", "dim_in", "in_planes", "inplanes",
               "channels", "channel", "in_chs", "c_in", "gate_channels", "num_channels", "n_channels", "ch", "c"}
OUT_CHANNELS = {"c2", "out_channels", "oup", "ch_out", "out_ch", "dim_out", "out_dim", "out_planes", "outplanes",
                "out_chs", "c_out"}
REPEATS = {"n", "num_blocks", "repeats", "n_blocks", "num_repeats"}
SCALES = {"scale", "scale_factor", "upscale", "up_factor"}
HELPER = "helper"  # --role CLASS=helper: keep a class out of the registration
_CHANNEL_LIKE = ("chan", "dim", "plane", "width", "feat")


@dataclass(frozen=True)
class Decision:
    name: str
    role: str
    repeats: bool
    reason: str       # what the role was read from, for the summary


def parse_role_options(options: tuple[str, ...]) -> dict[str, str]:
    chosen = {}
    for option in options:
        name, sep, role = option.partition("=")
        if not sep or not name or not role:
            raise UsageError(f"--role {option!r}: write CLASS=ROLE")
        if role not in (*roles.NAMES, HELPER):
            raise UsageError(f"--role {option}: unknown role {role!r} (roles: {', '.join(roles.NAMES)}, {HELPER})")
        chosen[name] = role
    return chosen


def decide(found: Scan, file: str, chosen: dict[str, str]) -> list[Decision]:
    modules = {name: info for name, info in found.classes.items() if info.is_module}
    if not modules:
        raise RefusedError(f"{file} defines no nn.Module subclass; nothing was written")
    unknown = [name for name in chosen if name not in modules]
    if unknown:
        raise UsageError(f"--role names {', '.join(unknown)}, which {file} does not define as an nn.Module "
                         f"subclass (it defines {', '.join(modules)})")
    used = {other for info in modules.values() for other in info.uses if other in modules}
    decisions, ambiguous = [], []
    for name, info in modules.items():
        if name in chosen:
            if chosen[name] != HELPER:
                decisions.append(Decision(name, chosen[name], _repeats(info, chosen[name]), "--role"))
            continue
        if name in used:
            continue  # a helper of the file's other classes
        decision = _infer(info)
        if decision is None:
            ambiguous.append(info)
        else:
            decisions.append(decision)
    if ambiguous:
        listed = "; ".join(f"{info.signature()}: {_why_ambiguous(info)}" for info in ambiguous)
        example = ambiguous[0].name
        raise RefusedError(f"cannot tell the role of {listed}; pass --role {example}=ROLE for each "
                           f"(roles: {', '.join(roles.NAMES)}, {HELPER}); nothing was written")
    if not decisions:
        raise RefusedError(f"{file}: every nn.Module subclass is a helper of another or marked --role ...=helper; "
                           "nothing to register; nothing was written")
    return decisions


def _repeats(info: ClassInfo, role: str) -> bool:
    params = [p.name for p in info.params or []]
    return roles.get(role).repeats and len(params) > 2 and params[2] in REPEATS


def _infer(info: ClassInfo) -> Decision | None:
    if info.params is None:
        return None
    names = [p.name for p in info.params]
    first = names[0] if names else None
    if len(names) >= 2 and first in IN_CHANNELS and names[1] in OUT_CHANNELS:
        if info.returns_several:
            return None
        repeats = len(names) > 2 and names[2] in REPEATS
        return Decision(info.name, "block", repeats, f"({first}, {names[1]}{', ' + names[2] if repeats else ''})")
    if any(n in OUT_CHANNELS for n in names):
        return None  # an output width that is not second: parse_model could not pass it
    if first in IN_CHANNELS:
        if info.returns_several:
            return Decision(info.name, "backbone", False, f"({first}) and a forward returning several maps")
        if any(n in SCALES for n in names):
            return Decision(info.name, "upsample", False, f"({first}, ..., {next(n for n in names if n in SCALES)})")
        return Decision(info.name, "same-width", False, f"({first})")
    if any(n in IN_CHANNELS or any(part in n for part in _CHANNEL_LIKE) for n in names):
        return None  # channel-like parameters, none of them first
    if info.returns_several:
        return None  # a backbone needs the input channels as its first parameter
    return Decision(info.name, "pass-through", False, "no channel parameter")


def _why_ambiguous(info: ClassInfo) -> str:
    if info.params is None:
        return "its constructor is not in the file"
    names = [p.name for p in info.params]
    if info.returns_several and any(n in OUT_CHANNELS for n in names):
        return "forward returns several maps but it takes an output-channel parameter"
    if info.returns_several:
        return "forward returns several maps (a backbone) but its first parameter is not the input channels"
    if any(n in OUT_CHANNELS for n in names):
        return "its output-channel parameter does not follow the input channels"
    return "a channel-like parameter that is not first"
