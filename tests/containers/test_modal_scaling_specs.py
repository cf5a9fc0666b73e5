"""The scale-out settings reach what each Modal app tells Modal, checked offline: the
autoscaler's settings and the region in the function's definition (``Function.info()`` and the
values Modal's loader sends when deploying), and ``@modal.concurrent``'s inputs."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.support.modal_container import definition_value, service_function
from tests.support.optional import llamacpp_param

APPS = {
    "modal_dummy": ("promptwire_modal_dummy.modal_app", "web", "PROMPTWIRE_MODAL_DUMMY__"),
    "modal_exllama": ("promptwire_modal_exllama.modal_app", "Server", "PROMPTWIRE_MODAL_EXLLAMA__"),
    "llamacpp": ("promptwire_llamacpp.modal_app", "Server", "PROMPTWIRE_LLAMACPP__"),
}

#: The apps as parametrize cases; the llamacpp one skips without its distribution.
BACKENDS = [
    llamacpp_param(name) if module.startswith("promptwire_llamacpp.") else name
    for name, (module, _, _) in sorted(APPS.items())
]

SCALED_OUT = {
    "MIN_CONTAINERS": "1",
    "MAX_CONTAINERS": "6",
    "BUFFER_CONTAINERS": "2",
    "SCALEDOWN_WINDOW": "900",
    "MAX_INPUTS": "24",
    "TARGET_INPUTS": "12",
    "REGION": "eu-west,eu-central",
}


@pytest.fixture()
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    loaded: list[str] = []

    def run(backend: str, **settings: str) -> tuple[ModuleType, Any, Any]:
        """The app module, its web endpoint's ``Function.info()`` and the function Modal's
        loader would deploy."""
        module_name, attribute, prefix = APPS[backend]
        for name, value in settings.items():
            monkeypatch.setenv(f"{prefix}{name}", value)
        sys.modules.pop(module_name, None)
        loaded.append(module_name)
        module = importlib.import_module(module_name)
        function, is_class = service_function(module, attribute)
        web = getattr(module, attribute)().web if is_class else module.web
        return module, web.info(), function

    yield run
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_scale_out_settings_reach_the_definition(load: Any, backend: str) -> None:
    _, info, function = load(backend, **SCALED_OUT)
    assert info.regions == ["eu-west", "eu-central"]
    assert info.concurrency_info.max_inputs == 24
    assert info.concurrency_info.target_inputs == 12
    autoscaler = definition_value(function, "autoscaler_settings")
    assert (
        autoscaler.min_containers,
        autoscaler.max_containers,
        autoscaler.buffer_containers,
        autoscaler.scaledown_window,
    ) == (1, 6, 2, 900)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unset_they_leave_modal_its_defaults(load: Any, backend: str) -> None:
    module, info, function = load(backend)
    assert info.regions is None  # anywhere, at no multiplier
    assert info.concurrency_info.max_inputs == module.settings.max_inputs
    assert info.concurrency_info.target_inputs is None
    autoscaler = definition_value(function, "autoscaler_settings")
    assert not autoscaler.HasField("buffer_containers")
    assert (autoscaler.min_containers, autoscaler.max_containers) == (0, 1)
    assert autoscaler.scaledown_window == module.settings.scaledown_window


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_container_gets_the_same_scaling(load: Any, backend: str) -> None:
    """The settings go to the container with the others (its import must define the same
    function)."""
    _, info, _ = load(backend, **SCALED_OUT)
    (env_secret,) = [s for s in info.secrets if s.startswith("Secret.from_dict")]
    prefix = APPS[backend][2]
    for name in SCALED_OUT:
        assert f"{prefix}{name}" in env_secret
