"""Structural source edits (libcst). Each kind of edit is a class (base.py) that finds its anchor by name
and shape, classifies a tree as pending / applied / conflict, transforms it, and carries its own examples;
registry.py orders the parser file's edits, parser_file.py runs them piece by piece (pieces.py)."""
