"""The dummy's Modal app, checked offline: its spec through Function.info(), its body through
Function.local(), served here by uvicorn."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import serve_asgi


@pytest.fixture()
def modal_app(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import importlib
    import sys

    monkeypatch.setenv("PROMPTWIRE_MODAL_DUMMY__MAX_INPUTS", "42")
    monkeypatch.setenv("PROMPTWIRE_MODAL_DUMMY__TIMEOUT", "120")
    monkeypatch.setenv("PROMPTWIRE_MODAL_DUMMY__REPLY", "hello from modal")
    sys.modules.pop("promptwire_modal_dummy.modal_app", None)
    module = importlib.import_module("promptwire_modal_dummy.modal_app")
    yield module
    sys.modules.pop("promptwire_modal_dummy.modal_app", None)


def test_the_deploy_spec_uses_settings(modal_app) -> None:  # type: ignore[no-untyped-def]
    info = modal_app.web.info()
    assert info.concurrency_info.max_inputs == 42
    assert info.timeout == 120
    assert info.gpus == []
    assert "modal.Secret.from_name('promptwire-api-key')" in info.secrets
    # Modal hands ``env=`` to the container as a Secret of its own: the engine's settings.
    (env_secret,) = [s for s in info.secrets if s.startswith("Secret.from_dict")]
    assert "PROMPTWIRE_MODAL_DUMMY__REPLY" in env_secret
    assert modal_app.app.name == "promptwire-modal-dummy"
    assert "PROMPTWIRE_MODAL_DUMMY__API_KEY_SECRET" in env_secret  # the deploy settings too
    assert modal_app.settings.reply == "hello from modal"


def test_the_web_function_serves_the_protocol(modal_app, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PROMPTWIRE_API_KEY", "modal-secret-token")
    asgi = modal_app.web.local()
    with serve_asgi(asgi) as server:
        assert httpx.get(server.url + "health").status_code == 200
        assert httpx.post(server.url, json={"prompt": "p"}).status_code == 401
        reply = httpx.post(
            server.url, json={"prompt": "p"}, headers={"Authorization": "Bearer modal-secret-token"}
        )
        assert reply.json()["prompt"] == "hello from modal"
        key = {"x-api-key": "modal-secret-token"}
        message = httpx.post(
            server.url + "v1/messages",
            json={"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
            headers=key,
        )
        assert message.json()["content"] == [{"type": "text", "text": "hello from modal"}]
        response = httpx.post(server.url + "v1/responses", json={"input": "hi"}, headers=key)
        assert response.json()["output"][0]["content"][0]["text"] == "hello from modal"


def test_a_secret_that_gave_no_key_is_not_served_open(
    modal_app, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The app names a Secret for its key: a container where none came (a Secret holding
    ``API_KEY`` or an empty key) used to serve everyone; it refuses to serve."""
    from promptwire import ConfigurationError

    for given in (None, "", "  "):
        if given is None:
            monkeypatch.delenv("PROMPTWIRE_API_KEY", raising=False)
        else:
            monkeypatch.setenv("PROMPTWIRE_API_KEY", given)
        with pytest.raises(ConfigurationError, match="'promptwire-api-key' gave no"):
            modal_app.web.local()


def test_an_open_endpoint_is_served_when_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    monkeypatch.setenv("PROMPTWIRE_MODAL_DUMMY__API_KEY_SECRET", "")
    monkeypatch.delenv("PROMPTWIRE_API_KEY", raising=False)
    sys.modules.pop("promptwire_modal_dummy.modal_app", None)
    try:
        module = importlib.import_module("promptwire_modal_dummy.modal_app")
        assert not any("from_name" in secret for secret in module.web.info().secrets)
        with serve_asgi(module.web.local()) as server:
            assert httpx.post(server.url, json={"prompt": "p"}).status_code == 200
    finally:
        sys.modules.pop("promptwire_modal_dummy.modal_app", None)
