"""What a backend implements to be served: an engine that turns a request into text.

The server (``promptwire.server``) owns HTTP; an engine owns generation. An engine only has to
implement ``stream`` and may yield nothing but text: the core runs every stream through one loop
(``Engine.generate``) that applies the request's ``stop`` sequences and ``max_tokens``, counts
usage and sets the finish reason, so engines do not each rewrite it. Whole replies are assembled
from the same loop, and conversations (``messages``) reach the engine already rendered into
``prompt`` by ``render_chat``. Engines must not block the event loop.

Tool calling and structured output (protocol v1.2) are opt-in: an engine that can honour them
says so in ``capabilities``, and the server refuses them (422, never free text) for one that does
not. Such an engine finds ``tools``, ``tool_choice`` and ``response_format`` on the request,
gets the tools in ``render_chat_with_tools``, and yields ``ToolCall``s beside its text.
"""

from promptwire.engine._contract import (
    Completion,
    Engine,
    EngineError,
    EngineEvent,
    EngineMetric,
    EngineNotReady,
    EngineOverloaded,
    Finish,
    PreparedT,
    RequestLimits,
    RequestRejected,
    RequestUnsupported,
    TextChunk,
    ToolCall,
    check_capabilities,
    quick_prepare,
    render_request,
    rendered_request,
)

__all__ = [
    "Completion",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EngineMetric",
    "EngineNotReady",
    "EngineOverloaded",
    "Finish",
    "PreparedT",
    "RequestLimits",
    "RequestRejected",
    "RequestUnsupported",
    "TextChunk",
    "ToolCall",
    "check_capabilities",
    "quick_prepare",
    "render_request",
    "rendered_request",
]
