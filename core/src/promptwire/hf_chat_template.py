"""``promptwire.hf_chat_template`` keeps working where users import it: the module now lives in
:mod:`promptwire.engine.hf_chat_template`."""

from promptwire.engine.hf_chat_template import *  # noqa: F403
from promptwire.engine.hf_chat_template import __all__ as __all__
