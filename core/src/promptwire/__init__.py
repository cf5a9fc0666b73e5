"""promptwire: call your own LLM behind a prompt endpoint (Modal or local) from LangChain.

This module is the one import location for users and for backend authors: the LangChain models,
settings and errors, and the plugin-author API (``Backend``, ``Engine`` and its events and errors,
``Usage``, ``StopScanner``, ``hookimpl``). Attributes load on first use, so ``import promptwire``
stays cheap for serverless callers and never imports modal, FastAPI, uvicorn or torch.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING, Any

# The public names are listed once, as the imports below: type checkers read them, and
# ``_exports`` reads the same lines at run time to load each name from its module on first use.
if TYPE_CHECKING:
    from promptwire.engine import (
        Completion as Completion,
        Engine as Engine,
        EngineError as EngineError,
        EngineEvent as EngineEvent,
        EngineMetric as EngineMetric,
        EngineNotReady as EngineNotReady,
        EngineOverloaded as EngineOverloaded,
        Finish as Finish,
        RequestRejected as RequestRejected,
        RequestUnsupported as RequestUnsupported,
        TextChunk as TextChunk,
        ToolCall as ToolCall,
    )
    from promptwire.errors import (
        AllEndpointsFailedError as AllEndpointsFailedError,
        AuthenticationError as AuthenticationError,
        ConfigurationError as ConfigurationError,
        EndpointConnectError as EndpointConnectError,
        EndpointError as EndpointError,
        EndpointTimeoutError as EndpointTimeoutError,
        HTTPStatusError as HTTPStatusError,
        InvalidInputError as InvalidInputError,
        InvalidRequestError as InvalidRequestError,
        OverloadedError as OverloadedError,
        PluginError as PluginError,
        PromptwireError as PromptwireError,
        ProtocolError as ProtocolError,
        RateLimitError as RateLimitError,
        ReplyTooLargeError as ReplyTooLargeError,
        RequestTooLargeError as RequestTooLargeError,
        ServerError as ServerError,
        StreamError as StreamError,
        UnsupportedFeatureError as UnsupportedFeatureError,
    )
    from promptwire.langchain.chat import (
        ChatPromptwire as ChatPromptwire,
    )
    from promptwire.langchain.compat import (
        Modal as Modal,
    )
    from promptwire.langchain.llm import (
        PromptwireLLM as PromptwireLLM,
    )
    from promptwire.plugins.backends import (
        Backend as Backend,
        ClientAdapter as ClientAdapter,
        RegisterBackend as RegisterBackend,
    )
    from promptwire.plugins.hookspecs import (
        hookimpl as hookimpl,
    )
    from promptwire.protocol import (
        Capabilities as Capabilities,
        ChatMessage as ChatMessage,
        FinishReason as FinishReason,
        PromptRequest as PromptRequest,
        ToolSpec as ToolSpec,
        Usage as Usage,
    )
    from promptwire.protocol.stops import (
        StopScanner as StopScanner,
    )
    from promptwire.settings import (
        PromptwireSettings as PromptwireSettings,
    )

    __version__: str


@cache
def _exports() -> dict[str, str]:
    """Each public name and the module it comes from, read from the ``TYPE_CHECKING`` imports of
    this file once (tens of microseconds: lines, not ``ast``, whose import alone costs more than
    the rest of ``import promptwire``; a unit test holds the two readings equal)."""
    import re

    with open(__file__, encoding="utf-8") as file:
        source = file.read()
    block = source[source.index("if TYPE_CHECKING:") : source.index("    __version__: str")]
    found: dict[str, str] = {}
    for module, names in re.findall(r"from ([\w.]+) import \(([^)]*)\)", block):
        for name in re.findall(r"(\w+) as \1,", names):
            found[name] = module
    return found


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted([*_exports(), "__version__"])
    elif name == "__version__":  # from the installed distribution, so it cannot drift from it
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("promptwire")
        except PackageNotFoundError:  # sources without metadata, as a Modal container has them
            value = "unknown"
    else:
        module = _exports().get(name)
        if module is None:
            raise AttributeError(f"module 'promptwire' has no attribute {name!r}")
        value = getattr(import_module(module), name)
    globals()[name] = value
    return value
