"""One read-only `ast` tree per source text: apply reads the parser file (tasks.py, ~100 kB) for its pieces,
its bound names and parse_model's names, and each `ast.parse` of it costs tens of milliseconds."""

from __future__ import annotations

import ast
from functools import lru_cache


@lru_cache(maxsize=8)
def parse(source: bytes) -> ast.Module:
    """The module's tree; SyntaxError / ValueError as ast.parse raises them. Callers must not change it."""
    return ast.parse(source)
