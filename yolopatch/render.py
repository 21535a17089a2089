"""Render a recipe's model YAMLs from the jinja2 templates, in a sandbox with strict undefineds."""

from __future__ import annotations

import json

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import resources
from .errors import RefusedError
from .recipes import Recipe, YamlSpec


def _flow(value) -> str:
    """A value as YAML flow syntax (JSON is valid YAML): lists, strings, numbers, booleans."""
    return json.dumps(value)


def _environment(recipe: Recipe) -> ImmutableSandboxedEnvironment:
    """A recipe's own templates/ folder first (user recipes may bring templates), then the shipped ones."""
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(str(recipe.folder / "templates"), followlinks=False),
            jinja2.FileSystemLoader(str(resources.templates_dir())),
        ]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["flow"] = _flow
    return env


def render_yaml(recipe: Recipe, spec: YamlSpec, dialect: str, extra: dict | None = None,
                name: str | None = None) -> bytes:
    context = {**spec.vars, **(extra or {}), "dialect": dialect, "yaml_name": name or spec.name,
               "recipe": recipe.name}
    try:
        text = _environment(recipe).get_template(spec.template).render(**context)
    except jinja2.TemplateNotFound:
        raise RefusedError(f"recipe {recipe.name}: template {spec.template!r} not found in templates/") from None
    except jinja2.exceptions.SecurityError as exc:
        raise RefusedError(f"recipe {recipe.name}: template {spec.template} tried an unsafe operation ({exc})") from None
    except jinja2.TemplateError as exc:
        raise RefusedError(f"recipe {recipe.name}: template {spec.template} failed for {spec.name}: {exc}") from None
    return text.encode("utf-8")
