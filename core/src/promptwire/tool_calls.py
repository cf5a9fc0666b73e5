"""``promptwire.tool_calls`` keeps working where users import it: the module now lives in
:mod:`promptwire.engine.tool_calls`."""

from promptwire.engine.tool_calls import *  # noqa: F403
from promptwire.engine.tool_calls import __all__ as __all__
