"""Anthropic's Messages API on every promptwire app (``POST /v1/messages``), served by the same
engine as the prompt route.

``protocol``    the request of ``/v1/messages`` and the error body
``_routes``     the route
``_translate``  Anthropic's request as the engine's: system, messages and their blocks, tools
``_reply``      Anthropic's messages and stream events
``_errors``     ``AnthropicError`` and its answer; the shared layers' errors in Anthropic's shape
"""

__all__: list[str] = []
