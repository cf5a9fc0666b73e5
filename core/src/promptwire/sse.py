"""``promptwire.sse`` keeps working where users import it: the module now lives in
:mod:`promptwire.client.sse`."""

from promptwire.client.sse import *  # noqa: F403
from promptwire.client.sse import __all__ as __all__
