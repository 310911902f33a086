"""``python -m tracker.cli``: the same entry point as the ``tracker`` command."""

from tracker.cli.main import main

main()
