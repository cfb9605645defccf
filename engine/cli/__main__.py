"""`python -m engine.cli` = `tinylm`."""

from .main import run

run()
