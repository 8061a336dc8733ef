"""``python -m placer.cli``: the ``placer`` command."""

from placer.cli.app import run

run()
