"""Where promptwire's own log lines go when nobody configured logging.

A server's request log and a container's cold-start lines are INFO records of the ``promptwire``
loggers. Python drops INFO records when no handler is configured, which is the case under
``promptwire serve`` (uvicorn configures only its own loggers) and in a Modal container, so
the server gives the ``promptwire`` logger a handler of its own then. An application that
configures logging itself (a root handler) keeps full control: nothing is added.
"""

from __future__ import annotations

import logging
import sys

ROOT_LOGGER = "promptwire"


def ensure_output(level: int = logging.INFO) -> None:
    """Send ``promptwire`` records to stderr, one message per line, unless logging is configured
    already (a handler on the root or on ``promptwire``). A level set before is kept."""
    logger = logging.getLogger(ROOT_LOGGER)
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(level)


def set_level(level: str | int) -> None:
    """The level of every ``promptwire`` logger (``promptwire serve --log-level``)."""
    value = level.upper() if isinstance(level, str) else level
    if value == "TRACE":  # uvicorn's extra level
        value = logging.DEBUG
    logging.getLogger(ROOT_LOGGER).setLevel(value)
