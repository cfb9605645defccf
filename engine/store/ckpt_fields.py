"""The plain fields of a checkpoint (step, tokenizer_sha256, model_hash...) without
importing torch.

Why: `import torch` costs seconds, and a check that only needs a string from the
checkpoint (the chat refusing a tokenizer that is not the checkpoint's) must not hold up
a board that answers in milliseconds. A torch checkpoint is a zip whose `*/data.pkl`
pickles the dict; tensors in it are persistent references to other zip members. This
reader unpickles with every global replaced by an inert stub (nothing is imported,
nothing runs) and keeps only str/int/float/bool/None values.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

from engine.errors import UserError

Scalar = str | int | float | bool | None


class _Inert:
    """Stands in for every class or function the pickle names (tensor rebuilders,
    dtypes): called, it builds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _FieldUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict  # state dicts are OrderedDicts; harmless
        return _Inert

    def persistent_load(self, pid: Any) -> None:
        return None  # a tensor's storage: not read


def checkpoint_fields(path: str | Path, with_config: bool = False) -> dict[str, Any]:
    """Top-level scalar entries of a checkpoint (engine/store/checkpoint.py); with_config
    adds its "config" (plain dicts), so the model shape can be checked without torch too."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist()
                     if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise UserError(f"{path} has no data.pkl: not a PyTorch checkpoint; "
                                "retrain or re-import it")
            with zf.open(names[0]) as fh:
                data = _FieldUnpickler(fh).load()
    except (zipfile.BadZipFile, OSError, pickle.UnpicklingError, EOFError) as e:
        from .checkpoint import recovery_hint

        raise UserError(f"{path} is damaged or not a checkpoint ({e}); "
                        f"{recovery_hint(path)}") from e
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a dict: not a tinylm checkpoint")
    plain = (str, int, float, bool, type(None))
    fields = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, plain)}
    if with_config and _plain_dict(data.get("config")):
        fields["config"] = data["config"]
    return fields


def _plain_dict(value: Any) -> bool:
    """A dict of scalars (or of such dicts) by str keys, as the "config" entry is."""
    if not isinstance(value, dict):
        return False
    return all(isinstance(k, str) and (isinstance(v, (str, int, float, bool, type(None)))
                                       or _plain_dict(v)) for k, v in value.items())
