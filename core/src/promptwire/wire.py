"""``promptwire.wire`` keeps working where users import it: the module now lives in
:mod:`promptwire.client.wire`."""

from promptwire.client.wire import *  # noqa: F403
from promptwire.client.wire import __all__ as __all__
