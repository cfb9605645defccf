"""`python -m engine` = `tinylm`."""

from engine.cli.main import run

run()
