"""The endpoint client's parts, one job per module, in the manner of httpx's own.

``config``      what a client is told: ``ClientConfig``, the endpoint URL and secret checks
``errors``      what goes wrong: one table from transport failures to promptwire's errors,
                redaction, and the stale kept-alive connection a request may meet
``retry``       when to try again and after how long (one policy for sync and async)
``redirects``   what may follow a redirect (credentials and bodies stay on the endpoint's origin)
``exchange``    everything about one call that does no I/O: requests, deadlines, replies, events
``pools``       the httpx clients promptwire makes: async pools per event loop, no cookies
``forks``       a forked child makes its own clients (the parent's hold the parent's connections)
``sync``/``aio``  the I/O shells: the same code, the second with ``await`` (a test checks)

``promptwire.client.EndpointClient`` puts the two shells together behind one object.
"""
