"""``promptwire.hookspecs`` keeps working where users import it: the module now lives in
:mod:`promptwire.plugins.hookspecs`."""

from promptwire.plugins.hookspecs import *  # noqa: F403
from promptwire.plugins.hookspecs import __all__ as __all__
