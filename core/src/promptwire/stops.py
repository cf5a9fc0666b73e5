"""``promptwire.stops`` keeps working where users import it: the module now lives in
:mod:`promptwire.protocol.stops`."""

from promptwire.protocol.stops import *  # noqa: F403
from promptwire.protocol.stops import __all__ as __all__
