"""Synthetic-image generators and the generation cache."""

from synthmed.generators.base import Generator

__all__ = ["Generator"]
