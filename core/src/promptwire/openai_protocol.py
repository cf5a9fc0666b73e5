"""``promptwire.openai_protocol`` keeps working where users import it: the module now lives in
:mod:`promptwire.server.openai.protocol`."""

from promptwire.server.openai.protocol import *  # noqa: F403
from promptwire.server.openai.protocol import __all__ as __all__
