"""The processor's books: deliveries admitted and not ended, and what waits on them."""

from __future__ import annotations

import asyncio


class Books:
    """What is admitted and not ended, and the events publishers and ``join`` wait on."""

    def __init__(self) -> None:
        self.pending = 0  # deliveries admitted and not ended (memory and store)
        self.space = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def add(self, n: int) -> None:
        if n:
            self.pending += n
            self.idle.clear()

    def end(self) -> None:
        self.pending -= 1
        self.space.set()
        if self.pending == 0:
            self.idle.set()
