"""``promptwire.telemetry`` keeps working where users import it: the module now lives in
:mod:`promptwire.server.observability.telemetry`."""

from promptwire.server.observability.telemetry import *  # noqa: F403
from promptwire.server.observability.telemetry import __all__ as __all__
