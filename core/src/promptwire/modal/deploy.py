"""``promptwire deploy BACKEND``: deploy a backend's Modal app and find its endpoint URL.

Generic over backends: a backend names the module of its Modal app (``Backend.modal_app``); that
module defines ``app`` (a ``modal.App``) and its web endpoint either as ``endpoint_url()``
(returning the URL once deployed) or as a function named ``web``. The module reads the user's
settings when imported, so the deploy uses them. ``modal`` is imported only here and only when
deploying; Modal's failures become one-line ``PromptwireError``s (the CLI prints no traceback),
and what Modal prints goes to stderr (stdout carries the URL alone).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from promptwire.errors import ConfigurationError, PromptwireError
from promptwire.plugins.backends import Backend

MODAL_SETUP_HINT = (
    "run `modal setup` (or `modal token new`), or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET"
)


class DeployError(PromptwireError):
    """Deploying failed on Modal's side."""


class ModalNotAuthenticated(ConfigurationError):
    """This machine has no Modal credentials."""


@dataclass(frozen=True)
class Deployment:
    backend: str
    app_name: str
    url: str | None
    """The endpoint URL (``PROMPTWIRE_ENDPOINT_URL``), when the app module exposes it."""
    dashboard_url: str | None


def _import_modal() -> Any:
    try:
        import modal
        import modal.runner
    except ImportError as exc:  # pragma: no cover - modal comes with every Modal plugin
        raise ConfigurationError(
            f"deploying needs the `modal` package ({exc}); pip install modal"
        ) from exc
    return modal


def _one_line(exc: BaseException) -> str:
    """Modal's messages may run over several lines (a name check adds the naming rules)."""
    return " ".join(str(exc).split())


@contextmanager
def modal_errors() -> Iterator[None]:
    """Turn Modal's exceptions into promptwire errors that read as one clear line."""
    from modal.exception import (
        AuthError,
        ConnectionError as ModalConnectionError,
        Error as ModalError,
        NotFoundError,
    )

    try:
        yield
    except AuthError as exc:
        detail = f" ({_one_line(exc)})" if "profile" in str(exc).lower() else ""
        raise ModalNotAuthenticated(
            f"Modal is not set up on this machine: {MODAL_SETUP_HINT}{detail}"
        ) from None
    except NotFoundError as exc:
        hint = (
            " (create it with `modal secret create NAME KEY=VALUE`, or point the backend's "
            "*_SECRET setting at an existing one)"
            if "secret" in str(exc).lower()
            else ""
        )
        raise DeployError(
            f"Modal could not find what the app needs: {_one_line(exc)}{hint}"
        ) from None
    except ModalConnectionError as exc:
        raise DeployError(f"could not reach Modal: {_one_line(exc)}") from None
    except ModalError as exc:
        raise DeployError(
            f"Modal refused the deployment: {type(exc).__name__}: {_one_line(exc)}"
        ) from None


@contextmanager
def progress_on_stderr() -> Iterator[None]:
    """Send what Modal prints (progress, build logs) to stderr: the deploy's stdout is the
    endpoint URL alone, so ``URL=$(promptwire deploy ...)`` captures just that."""
    with redirect_stdout(sys.stderr):
        yield


def load_modal_app(module_name: str) -> tuple[ModuleType, Any]:
    """Import a backend's Modal app module and return it with its ``app``. Defining the app can
    already be refused by Modal (a name it does not accept, say): that is one line too."""
    modal = _import_modal()
    with modal_errors():
        module = importlib.import_module(module_name)
    app = getattr(module, "app", None)
    if not isinstance(app, modal.App):
        raise ConfigurationError(f"{module_name} defines no modal.App named `app`")
    return module, app


def endpoint_url(module: ModuleType) -> str | None:
    """The deployed web endpoint's URL, as the app module exposes it."""
    finder = getattr(module, "endpoint_url", None)
    if callable(finder):
        url = finder()
        return str(url) if url else None
    web = getattr(module, "web", None)
    get_web_url = getattr(web, "get_web_url", None)
    if callable(get_web_url):
        url = get_web_url()
        return str(url) if url else None
    return None


@contextmanager
def warm_containers(backend: Backend, count: int) -> Iterator[None]:
    """Within the block, the backend's ``min_containers`` setting is ``count``: its app module,
    imported in the block, reads it (and hands it to its containers) like any other setting."""
    fields = backend.settings_class.model_fields if backend.settings_class else {}
    if "min_containers" not in fields:
        raise ConfigurationError(
            f"backend {backend.name!r} has no min_containers setting: --warm does not apply"
        )
    assert backend.settings_class is not None
    prefix = str(backend.settings_class.model_config.get("env_prefix", ""))
    variable = f"{prefix}MIN_CONTAINERS".upper()
    saved = os.environ.get(variable)
    os.environ[variable] = str(count)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved


def deploy_backend(
    name: str, *, environment: str | None = None, warm: int | None = None
) -> Deployment:
    """Deploy backend ``name``'s Modal app with the current settings (``modal deploy``).
    ``warm``: containers Modal keeps running, ready (its ``min_containers``), in place of the
    backend's setting."""
    from promptwire.plugins import get_backend

    backend = get_backend(name).backend
    if backend.modal_app is None:
        raise ConfigurationError(f"backend {name!r} has no Modal app to deploy")
    modal = _import_modal()
    with nullcontext() if warm is None else warm_containers(backend, warm):
        if warm is not None:
            sys.modules.pop(backend.modal_app, None)  # read the settings again
        module, app = load_modal_app(backend.modal_app)
    with modal_errors(), progress_on_stderr():
        with modal.enable_output():
            result = modal.runner.deploy_app(app, environment_name=environment)
        url = endpoint_url(module)
    return Deployment(
        backend=name, app_name=str(app.name), url=url, dashboard_url=result.app_page_url
    )


__all__ = [
    "MODAL_SETUP_HINT",
    "DeployError",
    "Deployment",
    "ModalNotAuthenticated",
    "deploy_backend",
    "endpoint_url",
    "load_modal_app",
    "modal_errors",
    "progress_on_stderr",
    "warm_containers",
]
