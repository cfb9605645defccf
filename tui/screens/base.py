"""What every screen of the app shares: errors of its workers go to the app's one reporter.

A mixin, not a base Screen, so modal screens can use it too; it works by handler name because
Worker.StateChanged does not bubble from the screen that owns the worker to the app."""

from __future__ import annotations

from typing import Any

from textual.worker import Worker


class ReportsWorkerErrors:
    app: Any

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.app.report_worker_error(event)
