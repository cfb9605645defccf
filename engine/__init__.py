"""tinylm engine: everything that is not UI.

Importable and scriptable without Textual, and without torch at import time: modules that need torch
import it inside the functions that use it, so the TUI and the CLI start fast.
"""

__version__ = "0.1.0"
