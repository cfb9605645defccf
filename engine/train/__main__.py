"""`python -m engine.train EXP_DIR ...`: the training subprocess (engine/train/loop.py)."""

import sys

from .loop import main

sys.exit(main())
