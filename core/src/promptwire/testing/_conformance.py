"""``EndpointConformanceTests``: the prompt endpoint protocol (docs/PROTOCOL.md), checked over HTTP.

The checks, by group:

- replies: ``/health`` answers 200; a whole reply is a JSON object whose ``prompt`` is a string,
  with ``usage``, ``finish_reason`` and ``model`` well typed when present; unknown keys are
  ignored; ``max_tokens`` is honoured;
- errors: a missing or non-string ``prompt``, a known key with a wrong type or range, a body that
  is not a JSON object, and a wrong method or path all get the protocol's JSON error with the
  right status, never a stack trace; a request refused before streaming gets a status, not a
  stream;
- streaming: ``"stream": true`` gives ``delta`` events then exactly one ``done`` (or one whole
  JSON reply, from a server that does not stream);
- stops: a stop sequence never shows in a reply, whole or streamed;
- auth (when ``api_key`` is given): no token or a wrong one gets a JSON 401, ``/health`` stays
  open;
- protocol v1.1 (when ``/health`` says 1.1 or later): ``messages`` are accepted and checked
  strictly;
- protocol v1.2 (when ``/health`` says so): ``capabilities`` on ``/health``; tools and a JSON
  response format are either honoured as declared (a call of an offered tool; a JSON object) or
  refused with 422 ``unsupported``, never answered with free text;
- clients: promptwire's own (``PromptwireLLM``, ``ChatPromptwire``) and, when the endpoint
  echoes the prompt and needs no token, the old ``langchain_community.llms.Modal``.

Class attributes tune the checks to the backend; the fixtures ``endpoint_url`` (required) and
``api_key`` (default ``None``) say where it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from promptwire.protocol import EVENT_DONE
from promptwire.testing._assertions import (
    JSON,
    assert_protocol_error,
    assert_whole_reply,
    read_stream,
    speaks,
)

#: Seconds between two looks at ``/health`` while an endpoint is not ready yet.
READY_POLL = 0.2


class EndpointConformanceTests:
    """Subclass it and override the ``endpoint_url`` fixture (and ``api_key`` if the endpoint
    has a bearer token). Tune the checks with the class attributes below."""

    echoes_prompt: ClassVar[bool] = False
    """Replies contain the prompt (an echo engine). Turns on the check against
    ``langchain_community.llms.Modal``, which raises on replies that do not, and the checks that
    a v1.1 server answers its rendered ``messages``, not ``prompt``."""
    deterministic: ClassVar[bool] = False
    """The same request always gets the same text (streamed or whole): the checks then compare
    texts exactly (a stream with its whole reply, a stopped reply with the text before its stop
    sequence)."""
    counts_words: ClassVar[bool] = False
    """The endpoint honours ``max_tokens`` exactly, with whitespace-separated words as tokens."""
    prompt: ClassVar[str] = "Say hello to the conformance kit."
    """The prompt every check sends."""
    max_tokens: ClassVar[int] = 16
    """The most tokens every check asks for (keeps a real model quick)."""
    timeout: ClassVar[float] = 120.0
    """Seconds to wait for any one reply (a cold start on Modal can be slow)."""

    # -- where the endpoint is -----------------------------------------------------------------

    @pytest.fixture
    def endpoint_url(self) -> str:
        """The endpoint's URL: override it (required), e.g. as a class-scoped fixture that serves
        your app with ``BackgroundServer`` and yields ``server.url``, or returns a deployed URL."""
        raise NotImplementedError("override the endpoint_url fixture with your endpoint's URL")

    @pytest.fixture
    def api_key(self) -> str | None:
        """The endpoint's bearer token, or None when it has none (override it for an endpoint
        with a token: the auth checks then run)."""
        return None

    @pytest.fixture
    def health_url(self, endpoint_url: str) -> str:
        return endpoint_url.rstrip("/") + "/health"

    @pytest.fixture
    def http(self, api_key: str | None) -> Iterator[httpx.Client]:
        """An HTTP client that sends the token (when there is one) and follows redirects."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        with httpx.Client(headers=headers, timeout=self.timeout, follow_redirects=True) as client:
            yield client

    @pytest.fixture
    def anonymous(self) -> Iterator[httpx.Client]:
        """An HTTP client without any token."""
        with httpx.Client(timeout=self.timeout, follow_redirects=True) as client:
            yield client

    @pytest.fixture(autouse=True)
    def ready(self, anonymous: httpx.Client, health_url: str) -> None:
        """Wait (at most ``timeout`` seconds) until ``/health`` answers 200 before each check:
        an engine that loads in the background (its ``ready`` false meanwhile) or a cold start
        answers 503 "the model is loading" first, which is not a failure."""
        deadline = time.monotonic() + self.timeout
        answer = "no answer"
        while True:
            try:
                response = anonymous.get(health_url)
            except httpx.TransportError as exc:
                answer = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return
                answer = f"HTTP {response.status_code} {response.text[:200]}"
            if time.monotonic() >= deadline:
                pytest.fail(f"GET /health did not answer 200 within {self.timeout:g} s: {answer}")
            time.sleep(READY_POLL)

    @pytest.fixture
    def protocol_version(self, anonymous: httpx.Client, health_url: str) -> str:
        response = anonymous.get(health_url)
        try:
            version = response.json().get("protocol", "1")
        except (ValueError, AttributeError):
            version = "1"
        return str(version)

    def request(self, **overrides: Any) -> dict[str, Any]:
        """The body every check starts from: the prompt and ``max_tokens``."""
        return {"prompt": self.prompt, "max_tokens": self.max_tokens, **overrides}

    # -- replies -------------------------------------------------------------------------------

    def test_health_answers_200(self, anonymous: httpx.Client, health_url: str) -> None:
        response = anonymous.get(health_url)
        assert response.status_code == 200, f"GET /health: HTTP {response.status_code}"
        body = response.json()
        assert isinstance(body, dict) and body.get("status") == "ok", body
        assert isinstance(body.get("protocol", "1"), str), body

    def test_whole_reply(self, http: httpx.Client, endpoint_url: str) -> None:
        body = assert_whole_reply(http.post(endpoint_url, json=self.request()))
        if self.echoes_prompt:
            assert self.prompt in body["prompt"]

    def test_prompt_alone_is_enough(self, http: httpx.Client, endpoint_url: str) -> None:
        assert_whole_reply(http.post(endpoint_url, json={"prompt": self.prompt}))

    def test_unknown_keys_are_ignored(self, http: httpx.Client, endpoint_url: str) -> None:
        body = self.request(
            some_future_option={"nested": [1, 2]}, endpoint_url="http://x/", model="other"
        )
        assert_whole_reply(http.post(endpoint_url, json=body))

    def test_generation_parameters_are_accepted(
        self, http: httpx.Client, endpoint_url: str
    ) -> None:
        body = self.request(temperature=0.0, top_p=1.0, top_k=1, stop=["\n\n\n"], seed=7)
        assert_whole_reply(http.post(endpoint_url, json=body))

    def test_max_tokens_is_honoured(self, http: httpx.Client, endpoint_url: str) -> None:
        body = assert_whole_reply(http.post(endpoint_url, json=self.request(max_tokens=1)))
        if body.get("usage") and "completion_tokens" in body["usage"]:
            assert body["usage"]["completion_tokens"] <= 1, body
        if self.counts_words:
            assert len(body["prompt"].split()) <= 1, body

    # -- errors --------------------------------------------------------------------------------

    def test_missing_prompt_is_422(self, http: httpx.Client, endpoint_url: str) -> None:
        assert_protocol_error(http.post(endpoint_url, json={"max_tokens": 4}), 422)

    @pytest.mark.parametrize("prompt", [123, None, ["a list"], {"an": "object"}, True])
    def test_non_string_prompt_is_422(
        self, http: httpx.Client, endpoint_url: str, prompt: Any
    ) -> None:
        assert_protocol_error(http.post(endpoint_url, json={"prompt": prompt}), 422)

    @pytest.mark.parametrize(
        "params",
        [
            {"max_tokens": "5"},
            {"max_tokens": 2.5},
            {"max_tokens": -1},
            {"temperature": "hot"},
            {"temperature": -1.0},
            {"top_p": 2},
            {"stop": "a single string"},
            {"stop": [1, 2]},
            {"seed": "seven"},
            {"stream": "yes"},
        ],
        ids=lambda params: "-".join(f"{k}={v!r}" for k, v in params.items()),
    )
    def test_known_key_with_wrong_type_or_range_is_422(
        self, http: httpx.Client, endpoint_url: str, params: dict[str, Any]
    ) -> None:
        assert_protocol_error(http.post(endpoint_url, json={"prompt": self.prompt, **params}), 422)

    @pytest.mark.parametrize(
        "content", [b"not json", b"[1, 2]", b'"a string"', b"{"], ids=["text", "list", "str", "cut"]
    )
    def test_body_that_is_not_a_json_object_is_422(
        self, http: httpx.Client, endpoint_url: str, content: bytes
    ) -> None:
        response = http.post(endpoint_url, content=content, headers={"Content-Type": JSON})
        assert_protocol_error(response, 422)

    def test_wrong_method_and_path_get_json_errors(
        self, http: httpx.Client, endpoint_url: str
    ) -> None:
        assert_protocol_error(http.get(endpoint_url), 405)
        unknown = endpoint_url.rstrip("/") + "/no-such-path-here"
        assert_protocol_error(http.post(unknown, json=self.request()), (404, 405))

    def test_a_refused_stream_gets_a_status_not_a_stream(
        self, http: httpx.Client, endpoint_url: str
    ) -> None:
        response = http.post(endpoint_url, json={"prompt": 5, "stream": True})
        assert_protocol_error(response, 422)

    # -- streaming -----------------------------------------------------------------------------

    def test_stream_gives_deltas_then_one_done(self, http: httpx.Client, endpoint_url: str) -> None:
        with http.stream("POST", endpoint_url, json=self.request(stream=True)) as response:
            result = read_stream(response)
        if result.streamed:
            assert result.events[-1] == EVENT_DONE
        if result.done.get("usage") and "completion_tokens" in result.done["usage"]:
            assert result.done["usage"]["completion_tokens"] <= self.max_tokens
        if self.deterministic:
            whole = assert_whole_reply(http.post(endpoint_url, json=self.request()))
            assert result.text == whole["prompt"]

    def test_stop_sequences_are_honoured(self, http: httpx.Client, endpoint_url: str) -> None:
        """A stop sequence taken from the endpoint's own reply never shows in a reply, whole or
        streamed; a ``deterministic`` endpoint answers exactly the text before it."""
        free = assert_whole_reply(http.post(endpoint_url, json=self.request()))["prompt"]
        if len(free) < 2:
            pytest.skip(f"the reply {free!r} is too short to be cut by a stop sequence")
        stop = free[len(free) // 2]
        stopped = self.request(stop=[stop])
        whole = assert_whole_reply(http.post(endpoint_url, json=stopped))
        with http.stream("POST", endpoint_url, json={**stopped, "stream": True}) as response:
            streamed = read_stream(response)
        for text, how in ((whole["prompt"], "whole reply"), (streamed.text, "stream")):
            assert stop not in text, f"stop={[stop]!r}, yet the {how} contains it: {text!r}"
        if self.deterministic:
            before = free[: free.index(stop)]
            for text, how in ((whole["prompt"], "whole reply"), (streamed.text, "stream")):
                assert text == before, f"stop={[stop]!r}: the {how} is {text!r}, not {before!r}"
            for done in (whole, streamed.done):
                assert done.get("finish_reason") in (None, "stop"), (
                    f"stopped by {stop!r}: finish_reason must be 'stop', got {done!r}"
                )

    def test_stream_false_gives_a_whole_reply(self, http: httpx.Client, endpoint_url: str) -> None:
        assert_whole_reply(http.post(endpoint_url, json=self.request(stream=False)))

    # -- auth ----------------------------------------------------------------------------------

    def test_no_token_is_401_and_health_stays_open(
        self, anonymous: httpx.Client, endpoint_url: str, health_url: str, api_key: str | None
    ) -> None:
        if not api_key:
            pytest.skip("the endpoint has no token (api_key is None)")
        assert_protocol_error(anonymous.post(endpoint_url, json=self.request()), 401)
        with anonymous.stream("POST", endpoint_url, json=self.request(stream=True)) as response:
            response.read()
            assert_protocol_error(response, 401)
        assert anonymous.get(health_url).status_code == 200

    def test_wrong_token_is_401_and_not_echoed(
        self, anonymous: httpx.Client, endpoint_url: str, api_key: str | None
    ) -> None:
        if not api_key:
            pytest.skip("the endpoint has no token (api_key is None)")
        wrong = f"{api_key}-wrong"
        response = anonymous.post(
            endpoint_url, json=self.request(), headers={"Authorization": f"Bearer {wrong}"}
        )
        assert_protocol_error(response, 401)
        assert wrong not in response.text

    # -- protocol v1.1: messages ---------------------------------------------------------------

    def test_messages_are_answered(
        self, http: httpx.Client, endpoint_url: str, protocol_version: str
    ) -> None:
        if not speaks(protocol_version, 1, 1):
            pytest.skip(f"the endpoint speaks protocol {protocol_version}, not 1.1")
        messages = [
            {"role": "system", "content": "You are the conformance kit's partner."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]
        body = self.request(prompt="IGNORED-PLAIN-PROMPT", messages=messages)
        reply = assert_whole_reply(http.post(endpoint_url, json=body))
        with http.stream("POST", endpoint_url, json={**body, "stream": True}) as response:
            streamed = read_stream(response)
        if self.echoes_prompt:
            for text in (reply["prompt"], streamed.text):
                assert "IGNORED-PLAIN-PROMPT" not in text, "a v1.1 server must ignore 'prompt'"
                assert "second question" in text

    @pytest.mark.parametrize(
        "messages",
        [
            [],
            "not a list",
            [{"role": "robot", "content": "hi"}],
            [{"role": "user", "content": 5}],
            [{"role": "user"}],
            ["a string"],
        ],
        ids=["empty", "str", "bad-role", "int-content", "no-content", "str-item"],
    )
    def test_invalid_messages_are_422(
        self, http: httpx.Client, endpoint_url: str, protocol_version: str, messages: Any
    ) -> None:
        if not speaks(protocol_version, 1, 1):
            pytest.skip(f"the endpoint speaks protocol {protocol_version}, not 1.1")
        body = self.request(messages=messages)
        assert_protocol_error(http.post(endpoint_url, json=body), 422)

    # -- protocol v1.2: tools and structured output ----------------------------------------------

    def capabilities(self, anonymous: httpx.Client, health_url: str) -> dict[str, Any]:
        capabilities = anonymous.get(health_url).json().get("capabilities", {})
        assert isinstance(capabilities, dict), "/health's capabilities must be an object"
        for name in ("tools", "structured_output"):
            value = capabilities.get(name, False)
            assert isinstance(value, bool), f"capabilities.{name} must be a boolean"
        return capabilities

    def test_tools_are_called_or_refused(
        self,
        http: httpx.Client,
        anonymous: httpx.Client,
        endpoint_url: str,
        health_url: str,
        protocol_version: str,
    ) -> None:
        if not speaks(protocol_version, 1, 2):
            pytest.skip(f"the endpoint speaks protocol {protocol_version}, not 1.2")
        tool = {
            "type": "function",
            "function": {
                "name": "conformance_probe",
                "parameters": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
            },
        }
        body = self.request(
            messages=[{"role": "user", "content": "Call conformance_probe."}],
            tools=[tool],
            tool_choice="required",
        )
        response = http.post(endpoint_url, json=body)
        if not self.capabilities(anonymous, health_url).get("tools", False):
            error = assert_protocol_error(response, 422)
            assert error["type"] == "unsupported", "a refused tool request must say 'unsupported'"
            return
        if response.status_code == 422:  # cut by max_tokens before its call was whole (§ 5.5)
            error = assert_protocol_error(response, 422)
            assert error["type"] == "invalid_request", error
            return
        reply = assert_whole_reply(response)
        if reply.get("finish_reason") == "length":
            return  # the same, as a server may answer it: the call cut, with its reason
        calls = reply.get("tool_calls")
        assert isinstance(calls, list) and calls, "a required tool call must come back"
        for call in calls:
            assert call["function"]["name"] == "conformance_probe"
            assert isinstance(call["id"], str) and call["id"]
            assert isinstance(call["function"]["arguments"], str)

    def test_json_is_answered_or_refused(
        self,
        http: httpx.Client,
        anonymous: httpx.Client,
        endpoint_url: str,
        health_url: str,
        protocol_version: str,
    ) -> None:
        if not speaks(protocol_version, 1, 2):
            pytest.skip(f"the endpoint speaks protocol {protocol_version}, not 1.2")
        body = self.request(
            messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format={"type": "json_object"},
        )
        response = http.post(endpoint_url, json=body)
        if not self.capabilities(anonymous, health_url).get("structured_output", False):
            error = assert_protocol_error(response, 422)
            assert error["type"] == "unsupported", "a refused JSON request must say 'unsupported'"
            return
        reply = assert_whole_reply(response)
        if reply.get("finish_reason") != "length":
            assert isinstance(json.loads(reply["prompt"]), dict), "json_object: a JSON object"

    # -- clients -------------------------------------------------------------------------------

    def test_promptwire_clients(self, endpoint_url: str, api_key: str | None) -> None:
        from promptwire.langchain.chat import ChatPromptwire
        from promptwire.langchain.llm import PromptwireLLM

        options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "api_key": api_key,
            "timeout": self.timeout,
            "max_retries": 0,
        }
        llm = PromptwireLLM(**options, model_kwargs={"max_tokens": self.max_tokens})
        assert isinstance(llm.invoke(self.prompt), str)
        assert isinstance("".join(llm.stream(self.prompt)), str)
        chat = ChatPromptwire(**options, max_tokens=self.max_tokens)
        message = chat.invoke(self.prompt)
        assert isinstance(message.content, str)
        streamed = "".join(str(chunk.content) for chunk in chat.stream(self.prompt))
        if self.deterministic:
            assert streamed == message.content
        llm.close()
        chat.close()

    def test_langchain_community_modal_client(self, endpoint_url: str, api_key: str | None) -> None:
        if not self.echoes_prompt:
            pytest.skip("langchain_community's Modal needs replies that contain the prompt")
        if api_key:
            pytest.skip("langchain_community's Modal cannot send a token")
        community = pytest.importorskip("langchain_community.llms")
        # Its constructor drops endpoint_url into model_kwargs (so it is also sent as an extra
        # key the server must ignore); the attribute has to be set after construction.
        llm = community.Modal(endpoint_url=endpoint_url, max_tokens=self.max_tokens)
        llm.endpoint_url = endpoint_url
        assert self.prompt in llm.invoke(self.prompt)
