"""TorchSampler: text from an experiment's checkpoint, streamed in small batches, model kept loaded.

Why: the Samples tab generates again and again from the same checkpoint; torch.load and the model
build cost more than a short generation, so the model stays loaded until the checkpoint file
changes (a run still training writes a new best.pt). Text goes out through `on_text` at most every
`flush_s` seconds: a tiny model makes hundreds of tokens a second, and one UI message per token
would be a flood. Runs on a worker thread; torch is imported there, never by the app at start.
No Textual import.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from engine.infer.params import SamplingParams
from engine.store.experiments import Experiment

APP_TORCH_THREADS = 1


def light_torch() -> None:
    """One torch thread in the app's process. Why: a tiny model gains nothing from a second thread,
    and two OpenMP threads spin-waiting beside a training run (or anything else on a 2-core machine)
    collapse: the demo model samples at ~90 tok/s on one thread and ~10 on two while the machine
    is busy (design.md, facts of 2026-11-28). The app must stay light beside the training it
    watches."""
    from engine.train.runtime import set_threads

    set_threads(APP_TORCH_THREADS)


@dataclass
class SampleStats:
    tokens: int
    seconds: float
    stopped: bool  # ended by should_stop, not by max_tokens / EOS / context

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class TorchSampler:
    def __init__(self, exp: Experiment, which: str = "best", flush_s: float = 0.05) -> None:
        self.exp = exp
        self.which = which
        self.flush_s = flush_s
        self._loaded: tuple[tuple[str, int], Any, Any] | None = None

    def _model(self) -> tuple[Any, Any]:
        from engine.chat.engines import load_torch
        from engine.infer.load import checkpoint_path

        light_torch()
        path = checkpoint_path(self.exp, self.which)
        key = (str(path), path.stat().st_mtime_ns)
        if self._loaded is None or self._loaded[0] != key:
            model, tok = load_torch(self.exp, self.which)
            self._loaded = (key, model, tok)
        return self._loaded[1], self._loaded[2]

    def stream(self, prompt: str, params: SamplingParams, on_text: Callable[[str], None],
               should_stop: Callable[[], bool]) -> SampleStats:
        """Generate; `on_text` gets the prompt first, then the new text in batches."""
        from engine.chat.engines import incremental_text, torch_stream

        model, tok = self._model()
        ids, stream = torch_stream(model, tok, prompt, params, should_stop=should_stop)
        count = 0

        def counted(it: Iterator[int]) -> Iterator[int]:
            nonlocal count
            for t in it:
                count += 1
                yield t

        on_text(prompt)
        start = last = time.monotonic()
        pending: list[str] = []
        for piece in incremental_text(tok, counted(stream), ids):
            pending.append(piece)
            now = time.monotonic()
            if now - last >= self.flush_s:
                on_text("".join(pending))
                pending.clear()
                last = now
        if pending:
            on_text("".join(pending))
        return SampleStats(count, time.monotonic() - start, should_stop())
