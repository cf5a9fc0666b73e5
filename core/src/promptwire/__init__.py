"""promptwire: call your own LLM behind a prompt endpoint (Modal or local) from LangChain.

Attributes load on first use, so ``import promptwire`` stays cheap for serverless callers and
never imports modal, FastAPI, uvicorn or torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "PromptwireLLM": "promptwire.llm",
    "ChatPromptwire": "promptwire.chat",
    "Modal": "promptwire.compat",
    "PromptwireSettings": "promptwire.settings",
    "Backend": "promptwire.backends",
    "ClientAdapter": "promptwire.backends",
    "hookimpl": "promptwire.hookspecs",
    "PromptwireError": "promptwire.errors",
    "ConfigurationError": "promptwire.errors",
    "PluginError": "promptwire.errors",
    "EndpointError": "promptwire.errors",
    "EndpointConnectError": "promptwire.errors",
    "EndpointTimeoutError": "promptwire.errors",
    "ProtocolError": "promptwire.errors",
    "ReplyTooLargeError": "promptwire.errors",
    "StreamError": "promptwire.errors",
    "HTTPStatusError": "promptwire.errors",
    "InvalidRequestError": "promptwire.errors",
    "AuthenticationError": "promptwire.errors",
    "RequestTooLargeError": "promptwire.errors",
    "RateLimitError": "promptwire.errors",
    "OverloadedError": "promptwire.errors",
    "ServerError": "promptwire.errors",
    "UnsupportedFeatureError": "promptwire.errors",
}

__all__ = [
    "AuthenticationError",
    "Backend",
    "ChatPromptwire",
    "ClientAdapter",
    "ConfigurationError",
    "EndpointConnectError",
    "EndpointError",
    "EndpointTimeoutError",
    "HTTPStatusError",
    "InvalidRequestError",
    "Modal",
    "OverloadedError",
    "PluginError",
    "PromptwireError",
    "PromptwireLLM",
    "PromptwireSettings",
    "ProtocolError",
    "RateLimitError",
    "ReplyTooLargeError",
    "RequestTooLargeError",
    "ServerError",
    "StreamError",
    "UnsupportedFeatureError",
    "hookimpl",
]

if TYPE_CHECKING:
    from promptwire.backends import Backend, ClientAdapter
    from promptwire.chat import ChatPromptwire
    from promptwire.compat import Modal
    from promptwire.errors import (
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
    from promptwire.hookspecs import hookimpl
    from promptwire.llm import PromptwireLLM
    from promptwire.settings import PromptwireSettings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'promptwire' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
