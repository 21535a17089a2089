"""Installed copies of the repository's recipes/ and templates/ folders (see resources.py)."""
