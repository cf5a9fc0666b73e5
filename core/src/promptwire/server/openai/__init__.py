"""The OpenAI API on every promptwire app, served by the same engine as the prompt route.

``protocol``    the requests and error body of ``/v1/completions`` and ``/v1/chat/completions``
``_routes``     the routes: ``GET /v1/models``, ``POST /v1/completions``,
                ``POST /v1/chat/completions``
``_translate``  OpenAI's requests as the engine's
``_reply``      OpenAI's replies and stream chunks
``_errors``     ``OpenAIError`` and its answer; the shared layers' errors in OpenAI's shape
"""

__all__: list[str] = []
