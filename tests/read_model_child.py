"""A read model catching up in a process of its own, for the kill -9 test
(tests/integration/test_read_model.py).

Run as ``python tests/read_model_child.py --url URL --page N --hang-at B``.

It follows the center's notification log at ``URL`` into the read model in pages of ``N``
events. In the ``B``-th page, after the page's rows were written in its transaction and before
the tracking row and the commit, it prints ``wrote <first>..<last>`` on stdout (flushed) and
sleeps: the test kills it there with SIGKILL. Should nobody kill it, it exits with code 3 after
``--deadline`` seconds without committing that page.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Tracking
from sqlalchemy.orm import Session

from eventcenter.projections.runner import ProjectionRunner
from eventcenter.projections.view import ReadModel
from eventcenter.storage.application import CenterApplication


class HangingModel(ReadModel):
    """A read model that stops, rows written and not committed, in its ``hang_at``-th page."""

    def __init__(self, datastore: Any, hang_at: int, deadline: float) -> None:
        super().__init__(datastore)
        self.hang_at = hang_at
        self.deadline = deadline
        self.pages = 0
        self.page: Sequence[tuple[int, Any]] = ()

    def process(self, notifications: Sequence[tuple[int, Any]]) -> int:
        self.page = notifications
        return super().process(notifications)

    def _insert_tracking(self, session: Session, tracking: Tracking) -> None:
        self.pages += 1
        if self.pages == self.hang_at:
            first, last = self.page[0][0], self.page[-1][0]
            os.write(sys.stdout.fileno(), f"wrote {first}..{last}\n".encode())
            time.sleep(self.deadline)
            os._exit(3)  # not killed: leave without committing
        super()._insert_tracking(session, tracking)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--page", type=int, required=True)
    parser.add_argument("--hang-at", type=int, required=True)
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    app = CenterApplication(args.url, cache_size=0, create_tables=False)
    model = HangingModel(app.recorder.datastore, args.hang_at, args.deadline)  # type: ignore[attr-defined]
    model.create_table()
    ProjectionRunner(model, app, page=args.page).catch_up()
    app.close()
    print("caught up without hanging", flush=True)


if __name__ == "__main__":
    main()
