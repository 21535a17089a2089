"""Where the shipped recipes and templates live: the repository's top-level folders in a source
checkout or editable install, or their copies inside the installed package."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE.parent


def _locate(name: str) -> Path:
    source = _SOURCE_ROOT / name
    if source.is_dir() and (_SOURCE_ROOT / "pyproject.toml").is_file():
        return source
    return _PACKAGE / "data" / name


def recipes_dir() -> Path:
    return _locate("recipes")


def templates_dir() -> Path:
    return _locate("templates")


def runtime_dir() -> Path:
    """Files the tool writes into every patched target (support code for multi-output backbones)."""
    return _PACKAGE / "runtime"
