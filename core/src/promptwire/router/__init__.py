"""The ``router`` backend: one model object, several endpoints.

``PROMPTWIRE_BACKEND=router`` with ``PROMPTWIRE_ROUTER__ENDPOINTS`` (a JSON list of URLs or of
``RouterEndpoint`` objects) and ``PROMPTWIRE_ROUTER__STRATEGY``; or, in code,
``routed(PromptwireLLM, ["http://a/", "http://b/"], strategy="latency")``. Each call goes to one
member; a member that is down is cooled down and the call moves on (``promptwire.router._members``
has the rules). The member that served a call is in ``generation_info`` / ``response_metadata``
under ``endpoint``; ``member_counts(model)`` gives each member's calls so far.
"""

from promptwire.router._routed import (
    RouterEndpoint,
    RouterSettings,
    Strategy,
    member_counts,
    routed,
)

__all__ = [
    "RouterEndpoint",
    "RouterSettings",
    "Strategy",
    "member_counts",
    "routed",
]
