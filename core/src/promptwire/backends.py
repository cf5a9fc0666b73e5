"""``promptwire.backends`` keeps working where users import it: the module now lives in
:mod:`promptwire.plugins.backends`."""

from promptwire.plugins.backends import *  # noqa: F403
from promptwire.plugins.backends import __all__ as __all__
