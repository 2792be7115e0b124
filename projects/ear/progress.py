"""Progress of long commands on a terminal: result lines on stdout, a bar on stderr below them."""
from __future__ import annotations

import sys
import time


class Progress:
    """Lines on stdout; on a terminal, a bar on stderr below them."""

    def __init__(self, total: int):
        self.total, self.count, self.started = total, 0, time.monotonic()
        self.show = sys.stderr.isatty() and total > 1

    def line(self, text: str, err: bool = False) -> None:
        if self.show:
            sys.stderr.write("\r\033[K")
        print(text, file=sys.stderr if err else sys.stdout, flush=True)
        self._draw()

    def step(self) -> None:
        self.count += 1
        self._draw()

    def _draw(self) -> None:
        if self.show:
            filled = int(30 * self.count / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.count}/{self.total} "
                             f"{time.monotonic() - self.started:.0f}s")
            sys.stderr.flush()

    def done(self) -> None:
        if self.show:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
