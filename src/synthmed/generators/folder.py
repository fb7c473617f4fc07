"""Placeholder while under construction."""

from synthmed.hookspecs import hookimpl  # noqa: F401
