"""Read a model config: the small YAML subset YOLO configs are written in, parsed directly, with PyYAML
for anything outside it.

Model configs are top-level `key: value` lines whose values are scalars or flow sequences (possibly
spread over several lines, as YOLOv5 writes `backbone: [[...], ...]`), block sequences of flow
sequences (`- [-1, 1, Conv, [64, 3, 2]]`) and one-level block mappings (`scales:`). Reading that subset
here is several times faster than PyYAML's constructor, which matters when `yolopatch bases` reads every
config of a release; any line this reader does not understand hands the whole text to PyYAML, so the
result is always what `yaml.safe_load` gives (tests hold the two equal on every stock config).
"""

from __future__ import annotations

import re


class _Outside(Exception):
    """The text uses YAML beyond the subset; PyYAML reads it instead."""


class ConfigError(ValueError):
    """The text is not valid YAML (PyYAML's message)."""


_NULL = {"~", "null", "Null", "NULL", ""}
_TRUE = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?[0-9]+\.[0-9]*$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:()\-]*$")  # starts with a letter: never a number or a date
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):(?:\s+(.*))?$")


def load(text: str):
    """The config as `yaml.safe_load` would give it."""
    try:
        return _Reader(text).document()
    except _Outside:
        return _pyyaml(text)


def _pyyaml(text: str):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(str(exc).replace("\n", " ")) from None


def scalar(token: str):
    """A plain (unquoted) scalar resolved as YAML 1.1 does, for the forms the subset admits."""
    if token in _NULL:
        return None
    if token in _TRUE:
        return True
    if token in _FALSE:
        return False
    if _INT.match(token):
        return int(token)
    if _FLOAT.match(token):
        return float(token)
    if _WORD.match(token):
        return token
    raise _Outside(token)


def _strip_comment(line: str) -> str:
    if "#" not in line and "'" not in line and '"' not in line:
        return line.rstrip()
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    if quote:
        raise _Outside(line)
    return line.rstrip()


_TOKEN = re.compile(r"""\s*(\[|\]|,|'[^']*'|"[^"]*"|[^,\[\]'"]+)""")


class _Flow:
    """A flow value: nested [ ... ] sequences of plain or quoted scalars, read in one pass over its tokens."""

    def __init__(self, text: str):
        if text.count("'") % 2 or text.count('"') % 2:
            raise _Outside(text)  # with quotes paired, every character belongs to some token
        self.tokens = _TOKEN.findall(text.rstrip())

    def whole(self):
        root: list = []
        stack = [root]
        last = "["  # what came before: "[" (or the start), ",", "]" or "v" (a value)
        for token in self.tokens:
            if token == "[":
                if last not in "[,":
                    raise _Outside(token)
                item: list = []
                stack[-1].append(item)
                stack.append(item)
            elif token == "]":
                if len(stack) == 1:
                    raise _Outside(token)
                stack.pop()
            elif token == ",":
                if last not in "v]" or len(stack) == 1:
                    raise _Outside(token)
            else:
                if last not in "[,":
                    raise _Outside(token)
                stack[-1].append(_token_value(token))
                token = "v"
            last = token
        if len(stack) != 1 or len(root) != 1:
            raise _Outside(" ".join(self.tokens))
        return root[0]


def _token_value(token: str):
    if token[0] in "'\"":
        if "\\" in token:
            raise _Outside(token)  # escapes: PyYAML's business
        return token[1:-1]
    token = token.strip()
    if token[0] in "{&*!|>%@`?":
        raise _Outside(token)
    found = _SCALARS.get(token, _MISSING)
    if found is _MISSING:
        found = _SCALARS[token] = scalar(token)
    return found


_MISSING = object()
_SCALARS: dict = {}  # plain scalar -> value: configs repeat the same few dozen tokens


def _balanced(text: str) -> bool:
    return text.count("[") == text.count("]")


class _Reader:
    def __init__(self, text: str):
        if "\t" in text:
            raise _Outside("tabs")
        self.lines = [_strip_comment(line) for line in text.splitlines()]
        if any(line.startswith(("---", "...", "%")) or "{" in line for line in self.lines):
            raise _Outside("documents, directives or flow mappings")
        self.at = 0

    def document(self) -> dict:
        result = {}
        while self._next_content():
            line = self.lines[self.at]
            match = _KEY.match(line)
            if line[0] == " " or not match:
                raise _Outside(line)
            key, rest = match.group(1), (match.group(2) or "").strip()
            if key in result or key in _NULL | _TRUE | _FALSE:
                raise _Outside(f"duplicate key {key}")
            self.at += 1
            result[key] = self._inline(rest) if rest else self._block()
        return result

    def _next_content(self) -> bool:
        while self.at < len(self.lines) and not self.lines[self.at].strip():
            self.at += 1
        return self.at < len(self.lines)

    def _inline(self, rest: str):
        if rest.startswith("["):
            return _Flow(self._until_balanced(rest)).whole()
        if rest[0] in "'\"":
            return _Flow(rest).whole()
        return scalar(rest)

    def _until_balanced(self, text: str) -> str:
        while not _balanced(text):
            if self.at >= len(self.lines):
                raise _Outside(text)
            text += "\n" + self.lines[self.at]
            self.at += 1
        return text

    def _block(self):
        if not self._next_content() or self.lines[self.at][0] != " ":
            return None
        first = self.lines[self.at].strip()
        if first.startswith("["):
            self.at += 1
            return _Flow(self._until_balanced(first)).whole()
        indent = len(self.lines[self.at]) - len(self.lines[self.at].lstrip(" "))
        if first.startswith("- ") or first == "-":
            return self._sequence(indent)
        return self._mapping(indent)

    def _items(self, indent: int):
        """The lines of a block at exactly `indent` spaces, with any continuation lines joined."""
        while self._next_content():
            line = self.lines[self.at]
            depth = len(line) - len(line.lstrip(" "))
            if depth < indent:
                return
            if depth > indent:
                raise _Outside(line)
            self.at += 1
            yield line.strip()

    def _sequence(self, indent: int) -> list:
        items = []
        for line in self._items(indent):
            if not line.startswith("- "):
                raise _Outside(line)
            value = line[2:].strip()
            if not value.startswith("["):
                items.append(_Flow(value).whole())
            else:
                items.append(_Flow(self._until_balanced(value)).whole())
        return items

    def _mapping(self, indent: int) -> dict:
        mapping = {}
        for line in self._items(indent):
            match = _KEY.match(line)
            if not match or not match.group(2) or match.group(1) in mapping or match.group(1) in _NULL | _TRUE | _FALSE:
                raise _Outside(line)
            mapping[match.group(1)] = self._inline(match.group(2).strip())
        return mapping
