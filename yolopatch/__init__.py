"""yolopatch: apply published model improvements to a YOLO checkout, verify them, revert exactly."""

__version__ = "0.1.0"
