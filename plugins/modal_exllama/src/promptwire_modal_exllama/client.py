"""The client side of the backend: what ``PromptwireLLM`` adds when ``PROMPTWIRE_BACKEND`` is
``modal_exllama``.

Timeouts, Modal's 303 redirects and proxy-auth headers (``PROMPTWIRE_MODAL_KEY`` /
``PROMPTWIRE_MODAL_SECRET``) are handled by the core client for every backend; this adapter adds
the parameters configured for this backend, checked before the first request is sent.
"""

from __future__ import annotations

from typing import Any

from promptwire.errors import ConfigurationError
from promptwire.plugins.backends import ClientAdapter
from promptwire.protocol import PromptRequest
from pydantic import ValidationError

from promptwire_modal_exllama.settings import ExllamaSettings

#: Keys that belong to each call, never to the defaults.
_PER_CALL_KEYS = frozenset({"prompt", "stream"})


class ExllamaClient(ClientAdapter[ExllamaSettings]):
    def default_params(self, settings: ExllamaSettings) -> dict[str, Any]:
        """``request_params`` from the settings (``PROMPTWIRE_MODAL_EXLLAMA__REQUEST_PARAMS``),
        validated like a request so a typo fails here rather than as a 422 later."""
        if not settings.request_params:
            return {}
        params = {k: v for k, v in settings.request_params.items() if k not in _PER_CALL_KEYS}
        try:
            PromptRequest.model_validate({"prompt": "", **params})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors(include_input=False, include_url=False)
            )
            raise ConfigurationError(
                f"PROMPTWIRE_MODAL_EXLLAMA__REQUEST_PARAMS is not valid: {problems}"
            ) from None
        return params
