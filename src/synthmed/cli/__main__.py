"""``python -m synthmed.cli``: the same as the ``synthmed`` command."""

from synthmed.cli import main

main()
