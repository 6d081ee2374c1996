"""Step messages with timings for long zoo operations (printed to stderr so stdout stays scriptable)."""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Iterator


@dataclass
class ProgressReporter:
    """Prints `peftlab: <model>: <message>` lines; `enabled=False` silences them."""

    model_name: str
    enabled: bool = True

    def info(self, message: str) -> None:
        if self.enabled:
            print(f"peftlab: {self.model_name}: {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Announce a step, run it, then report how long it took."""
        self.info(f"{message} ...")
        started = time.perf_counter()
        yield
        self.info(f"  done in {time.perf_counter() - started:.1f} s")
