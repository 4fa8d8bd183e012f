"""``python -m peermesh`` is the ``peermesh`` command."""

from peermesh.cli import main

main()
