"""``promptwire.chat_template`` keeps working where users import it: the module now lives in
:mod:`promptwire.protocol.chat_template`."""

from promptwire.protocol.chat_template import *  # noqa: F403
from promptwire.protocol.chat_template import __all__ as __all__
