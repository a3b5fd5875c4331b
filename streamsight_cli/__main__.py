"""``python -m streamsight_cli``: the ``streamsight`` command."""

from streamsight_cli import main

main()
