"""A Modal container whose engine went out of order stops taking requests, so Modal replaces it.

An engine whose worker stopped on an error (a CUDA error in a forward pass, say) serves nothing
more until it is started again (``Engine.out_of_order``), and in the server's own process nothing
starts it again: left alone, the container would answer 503 to every request until it scaled
down. Modal can do better once told: a container that stops fetching inputs
(``modal.experimental.stop_fetching_inputs``) gets no new requests, Modal sends them to another
container (starting one if none is up), and this one exits once what it holds is done.

A thread watches rather than the event loop, so it needs no loop of Modal's to keep running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from promptwire.engine import Engine

logger = logging.getLogger("promptwire.modal.retire")

#: Seconds between two looks at the engine.
EVERY = 1.0


def stop_fetching_inputs() -> None:
    """Modal's own call: this container takes no more inputs and exits when they are done."""
    import modal.experimental

    modal.experimental.stop_fetching_inputs()


class OutOfOrderWatch:
    """Watches ``engine`` from a thread of its own; the first time it is out of order, logs why
    and calls ``retire`` (Modal's ``stop_fetching_inputs``), once."""

    def __init__(
        self,
        engine: Engine[Any],
        *,
        retire: Callable[[], None] = stop_fetching_inputs,
        every: float = EVERY,
    ) -> None:
        self._engine = engine
        self._retire = retire
        self._every = every
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="promptwire-retire", daemon=True)
        self.retired: str | None = None
        """Why the container retired (the engine's ``out_of_order``), once it has."""

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching (the container is exiting anyway)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._closed.wait(self._every):
            if (reason := self._engine.out_of_order) is None:
                continue
            logger.error(
                "the engine is out of order (%s): this container takes no more requests, and "
                "Modal sends them to another",
                reason,
            )
            try:
                self._retire()
            except Exception:
                logger.exception("this container could not stop taking requests")
            self.retired = reason
            return


__all__ = ["EVERY", "OutOfOrderWatch", "stop_fetching_inputs"]
