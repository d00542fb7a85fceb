"""The open/closed state every push path keeps, so that misuse fails with a clear message.

``new -> open -> closed``; a closed path may be opened again (an engine that lost its
position closes the path, reconciles, and opens it anew). ``aclose`` is safe to call twice.
"""

from __future__ import annotations

from typing import Literal

from eventcenter.sources.connectors.errors import PathStateError

State = Literal["new", "open", "closed"]


class Lifecycle:
    def __init__(self, describe: str) -> None:
        self._describe = describe
        self.state: State = "new"

    def check_openable(self) -> None:
        """Raise unless ``open`` may be called now."""
        if self.state == "open":
            raise PathStateError(f"{self._describe}: open() called while open: aclose() first")

    def require_open(self, action: str) -> None:
        """Raise unless the path is open, naming the ``action`` that was attempted."""
        if self.state == "new":
            raise PathStateError(
                f"{self._describe}: {action}() before open(): call open(position) first"
            )
        if self.state == "closed":
            raise PathStateError(f"{self._describe}: {action}() after aclose()")

    def opened(self) -> None:
        self.state = "open"

    def closed(self) -> None:
        self.state = "closed"
