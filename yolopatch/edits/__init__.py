"""Structural source edits (libcst): each finds its anchor by name and shape, and is a fixed point."""
