"""`python -m engine` = `tinylm`."""

from .cli import run

run()
