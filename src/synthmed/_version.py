"""synthmed's version, in a module of its own so that nothing inside the package imports its face."""

__version__ = "0.1.0"
