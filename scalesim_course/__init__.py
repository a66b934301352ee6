"""Inference at scale: the course helper package."""

__version__ = "0.1.0"
