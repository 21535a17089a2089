"""Recipe options: hyperparameters a recipe declares in recipe.toml and a user sets on the command line.

    [options.theta]
    type = "float"          # "float" | "int" | "choice"
    default = 4.0
    min = 2.0               # float / int: inclusive bounds, either may be left out
    max = 6.0
    choices = ["none", "ciou"]   # choice: the allowed values
    above = "d"             # float / int: must be greater than the value of that (earlier) option
    doc = "shape-cost exponent"  # one line, printed by `show`

`apply RECIPE --option NAME=VALUE` sets one (validated here: unknown names, wrong types and values out of
range are usage errors); the values of every applied recipe are kept in .yolopatch/state.json and pinned in
yolopatch.lock, defaults included, so a lock reproduces the run exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import RefusedError, UsageError

TYPES = ("float", "int", "choice")


@dataclass(frozen=True)
class Option:
    name: str
    type: str
    default: object
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    above: str = ""

    def allowed(self) -> str:
        """The allowed values in words: "2.0 to 6.0", "at least 1", "one of none, ciou"."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.min is not None and self.max is not None:
            return f"{self.min} to {self.max}"
        if self.min is not None:
            return f"at least {self.min}"
        if self.max is not None:
            return f"at most {self.max}"
        return f"any {self.type}"

    def check(self, value: object) -> object:
        """The value as this option's type; ValueError says why it is refused."""
        if self.type == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise ValueError(f"must be {self.allowed()}")
        if isinstance(value, bool):
            raise ValueError(f"must be {'an integer' if self.type == 'int' else 'a number'}")
        if self.type == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValueError("must be an integer")
        else:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError("must be a finite number")
            value = float(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise ValueError(f"must be {self.allowed()}")
        return value

    def parse(self, text: str) -> object:
        """A command-line value; ValueError says why it is refused."""
        if self.type == "choice":
            return self.check(text)
        try:
            value = int(text) if self.type == "int" else float(text)
        except ValueError:
            raise ValueError(f"must be {'an integer' if self.type == 'int' else 'a number'}, got {text!r}") from None
        return self.check(value)


def declarations(raw: object, fail) -> tuple[Option, ...]:
    """The [options.<name>] tables of a recipe.toml; `fail(message)` makes the loader's error."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise fail("[options] must be a table of [options.<name>] tables")
    found = []
    for name, table in raw.items():
        if not name.isidentifier() or not isinstance(table, dict):
            raise fail(f"option {name!r}: its name must be a Python identifier and its entry a table")
        kind = table.get("type")
        if kind not in TYPES:
            raise fail(f"option {name}: type {kind!r} is not one of {', '.join(TYPES)}")
        bounds = {key: table.get(key) for key in ("min", "max")}
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in bounds.values()):
            raise fail(f"option {name}: min and max must be numbers")
        choices = table.get("choices", [])
        if kind == "choice" and (not choices or not all(isinstance(c, str) for c in choices)):
            raise fail(f"option {name}: a choice needs a non-empty list of strings in `choices`")
        above = table.get("above", "")
        earlier = {o.name: o for o in found}
        if above and (kind == "choice" or above not in earlier or earlier[above].type == "choice"):
            raise fail(f"option {name}: `above` must name an earlier numeric option")
        option = Option(name=name, type=kind, default=table.get("default"), doc=str(table.get("doc", "")),
                        choices=tuple(choices), above=above, **bounds)
        try:
            checked = option.check(option.default)
        except ValueError as exc:
            raise fail(f"option {name}: default {option.default!r} {exc}") from None
        if above and not checked > earlier[above].default:
            raise fail(f"option {name}: default {checked!r} must be above {above}'s default")
        found.append(Option(name=name, type=kind, default=checked, doc=option.doc, choices=option.choices,
                            above=above, **bounds))
    return tuple(found)


def _kept(recipe: str, option: Option, remembered: dict) -> object:
    """The remembered value (state.json, yolopatch.lock) checked again, or the default."""
    if option.name not in remembered:
        return option.default
    try:
        return option.check(remembered[option.name])
    except ValueError as exc:
        raise RefusedError(f"{recipe}'s option {option.name} = {remembered[option.name]!r} (as recorded) {exc}; "
                           "revert and apply again") from None


def resolve(recipes: list, given: tuple[str, ...], remembered: dict[str, dict] | None = None) -> dict[str, dict]:
    """Recipe name -> {option: value} for every recipe that declares options: the values given as
    `NAME=VALUE` or `RECIPE.NAME=VALUE` (a bare NAME must belong to exactly one of the recipes), else the
    value remembered from the last apply, else the default. UsageError (exit 2) names the first bad one."""
    remembered = remembered or {}
    values: dict[str, dict] = {}
    for recipe in recipes:
        if recipe.options:
            values[recipe.name] = {o.name: _kept(recipe.name, o, remembered.get(recipe.name, {})) for o in recipe.options}
    for item in given:
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise UsageError(f"--option {item}: expected NAME=VALUE (e.g. --option theta=4)")
        owner, dot, option_name = name.rpartition(".")
        owners = [r for r in recipes if (not dot or r.name == owner) and any(o.name == option_name for o in r.options)]
        if not owners:
            declared = sorted(f"{r.name}.{o.name}" for r in recipes for o in r.options)
            known = f" (options: {', '.join(declared)})" if declared else " (these recipes declare no options)"
            raise UsageError(f"--option {item}: no recipe being applied has an option {name!r}{known}")
        if len(owners) > 1:
            raise UsageError(f"--option {item}: {option_name} is an option of {', '.join(r.name for r in owners)}; "
                             f"write RECIPE.{option_name}=VALUE")
        option = next(o for o in owners[0].options if o.name == option_name)
        try:
            value = option.parse(text.strip())
        except ValueError as exc:
            raise UsageError(f"--option {item}: {owners[0].name}'s {option_name} {exc}") from None
        values[owners[0].name][option_name] = value
    for recipe in recipes:
        for option in recipe.options:
            chosen = values[recipe.name]
            if option.above and not chosen[option.name] > chosen[option.above]:
                raise UsageError(f"--option: {recipe.name}'s {option.name} ({chosen[option.name]}) must be above "
                                 f"its {option.above} ({chosen[option.above]})")
    return values
