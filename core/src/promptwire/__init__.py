"""promptwire: call your own LLM behind a prompt endpoint (Modal or local) from LangChain.

This module is the one import location for users and for backend authors: the LangChain models,
settings and errors, and the plugin-author API (``Backend``, ``Engine`` and its events and errors,
``Usage``, ``StopScanner``, ``hookimpl``). Attributes load on first use, so ``import promptwire``
stays cheap for serverless callers and never imports modal, FastAPI, uvicorn or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # LangChain models
    "PromptwireLLM": "promptwire.langchain.llm",
    "ChatPromptwire": "promptwire.langchain.chat",
    "Modal": "promptwire.langchain.compat",
    "PromptwireSettings": "promptwire.settings",
    # Errors a caller catches
    "PromptwireError": "promptwire.errors",
    "ConfigurationError": "promptwire.errors",
    "PluginError": "promptwire.errors",
    "EndpointError": "promptwire.errors",
    "EndpointConnectError": "promptwire.errors",
    "EndpointTimeoutError": "promptwire.errors",
    "ProtocolError": "promptwire.errors",
    "ReplyTooLargeError": "promptwire.errors",
    "StreamError": "promptwire.errors",
    "AllEndpointsFailedError": "promptwire.errors",
    "HTTPStatusError": "promptwire.errors",
    "InvalidRequestError": "promptwire.errors",
    "AuthenticationError": "promptwire.errors",
    "RequestTooLargeError": "promptwire.errors",
    "RateLimitError": "promptwire.errors",
    "OverloadedError": "promptwire.errors",
    "ServerError": "promptwire.errors",
    # The plugin-author API
    "hookimpl": "promptwire.plugins.hookspecs",
    "Backend": "promptwire.plugins.backends",
    "ClientAdapter": "promptwire.plugins.backends",
    "RegisterBackend": "promptwire.plugins.backends",
    "Engine": "promptwire.engine",
    "EngineEvent": "promptwire.engine",
    "TextChunk": "promptwire.engine",
    "Finish": "promptwire.engine",
    "Completion": "promptwire.engine",
    "EngineError": "promptwire.engine",
    "RequestRejected": "promptwire.engine",
    "EngineOverloaded": "promptwire.engine",
    "EngineNotReady": "promptwire.engine",
    "RequestUnsupported": "promptwire.engine",
    "ToolCall": "promptwire.engine",
    "EngineMetric": "promptwire.engine",
    "Capabilities": "promptwire.protocol",
    "ToolSpec": "promptwire.protocol",
    "PromptRequest": "promptwire.protocol",
    "ChatMessage": "promptwire.protocol",
    "FinishReason": "promptwire.protocol",
    "Usage": "promptwire.protocol",
    "StopScanner": "promptwire.protocol.stops",
    "UnsupportedFeatureError": "promptwire.errors",
}

__all__ = [
    "AllEndpointsFailedError",
    "AuthenticationError",
    "Backend",
    "Capabilities",
    "ChatMessage",
    "ChatPromptwire",
    "ClientAdapter",
    "Completion",
    "ConfigurationError",
    "EndpointConnectError",
    "EndpointError",
    "EndpointTimeoutError",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EngineMetric",
    "EngineNotReady",
    "EngineOverloaded",
    "Finish",
    "FinishReason",
    "HTTPStatusError",
    "InvalidRequestError",
    "Modal",
    "OverloadedError",
    "PluginError",
    "PromptRequest",
    "PromptwireError",
    "PromptwireLLM",
    "PromptwireSettings",
    "ProtocolError",
    "RateLimitError",
    "RegisterBackend",
    "ReplyTooLargeError",
    "RequestRejected",
    "RequestTooLargeError",
    "RequestUnsupported",
    "ServerError",
    "StopScanner",
    "StreamError",
    "TextChunk",
    "ToolCall",
    "ToolSpec",
    "UnsupportedFeatureError",
    "Usage",
    "__version__",
    "hookimpl",
]

if TYPE_CHECKING:
    from promptwire.engine import (
        Completion,
        Engine,
        EngineError,
        EngineEvent,
        EngineMetric,
        EngineNotReady,
        EngineOverloaded,
        Finish,
        RequestRejected,
        RequestUnsupported,
        TextChunk,
        ToolCall,
    )
    from promptwire.errors import (
        AllEndpointsFailedError,
        AuthenticationError,
        ConfigurationError,
        EndpointConnectError,
        EndpointError,
        EndpointTimeoutError,
        HTTPStatusError,
        InvalidRequestError,
        OverloadedError,
        PluginError,
        PromptwireError,
        ProtocolError,
        RateLimitError,
        ReplyTooLargeError,
        RequestTooLargeError,
        ServerError,
        StreamError,
        UnsupportedFeatureError,
    )
    from promptwire.langchain.chat import ChatPromptwire
    from promptwire.langchain.compat import Modal
    from promptwire.langchain.llm import PromptwireLLM
    from promptwire.plugins.backends import Backend, ClientAdapter, RegisterBackend
    from promptwire.plugins.hookspecs import hookimpl
    from promptwire.protocol import (
        Capabilities,
        ChatMessage,
        FinishReason,
        PromptRequest,
        ToolSpec,
        Usage,
    )
    from promptwire.protocol.stops import StopScanner
    from promptwire.settings import PromptwireSettings

    __version__: str


def __getattr__(name: str) -> Any:
    if name == "__version__":  # from the installed distribution, so it cannot drift from it
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("promptwire")
        except PackageNotFoundError:  # sources without metadata, as a Modal container has them
            value = "unknown"
    else:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'promptwire' has no attribute {name!r}")
        value = getattr(import_module(module), name)
    globals()[name] = value
    return value
