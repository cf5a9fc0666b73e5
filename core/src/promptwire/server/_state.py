"""What every route of an app serves from, whatever protocol it speaks: the engine, the limits,
the shared count of requests in flight, the shutdown, the thread that prepares requests, and
whether the engine is being served (between its ``start`` and its ``stop``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promptwire.engine import Engine
from promptwire.server._shutdown import GracefulShutdown
from promptwire.server._slots import RequestSlots
from promptwire.server._streaming import Preparer
from promptwire.settings import ServerLimits


@dataclass(eq=False)
class ServingState:
    """Kept as ``app.state.serving``; each protocol's routes (``_prompt_routes``,
    ``openai._routes``) are added from it."""

    engine: Engine[Any]
    limits: ServerLimits
    slots: RequestSlots
    shutdown: GracefulShutdown
    preparer: Preparer
    started: bool = False
    """The engine is served only between its ``start()`` and its ``stop()``."""

    def serving(self) -> bool:
        return self.started and self.engine.ready
