"""The Modal apps' scale-out settings (``promptwire.modal.scaling``), declared once and checked
before a deploy: what Modal refuses, or accepts and could never do, is refused with the
settings' names; the rest reaches Modal's decorators as keyword arguments."""

from __future__ import annotations

import pytest
from promptwire.modal.scaling import MAX_SCALEDOWN_WINDOW, MIN_SCALEDOWN_WINDOW, ModalScaling
from promptwire_modal_dummy.settings import DummySettings
from promptwire_modal_exllama.settings import ExllamaSettings
from pydantic import ValidationError

from tests.support.optional import NEEDS_LLAMACPP_PLUGIN, llamacpp_param

try:
    from promptwire_llamacpp.settings import LlamaCppSettings
except ImportError:  # left out by the default `uv sync`: its cases skip with the reason
    LlamaCppSettings = None  # type: ignore[assignment,misc]

BACKENDS = [
    ("PROMPTWIRE_MODAL_DUMMY__", DummySettings),
    ("PROMPTWIRE_MODAL_EXLLAMA__", ExllamaSettings),
    llamacpp_param("PROMPTWIRE_LLAMACPP__", LlamaCppSettings),
]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_containers": 2, "max_containers": 1}, r"min_containers \(2\) is larger than max"),
        ({"buffer_containers": 1}, r"buffer_containers \(1\) leaves no room under max_contain"),
        (
            {"buffer_containers": 3, "max_containers": 3},
            r"needs MAX_CONTAINERS of at least 4",
        ),
        ({"target_inputs": 101}, r"target_inputs \(101\) is larger than max_inputs \(100\)"),
        ({"scaledown_window": MIN_SCALEDOWN_WINDOW - 1}, "scaledown_window"),
        ({"scaledown_window": MAX_SCALEDOWN_WINDOW + 1}, "scaledown_window"),
        ({"region": ["US-East"]}, r"'US-East' is not a Modal region name"),
        ({"region": ["us east"]}, "not a Modal region name"),
        ({"region": ["us", "us"]}, "a region is named twice"),
        ({"buffer_containers": -1}, "buffer_containers"),
        ({"max_inputs": 0}, "max_inputs"),
        ({"target_inputs": 0}, "target_inputs"),
    ],
)
def test_what_modal_would_refuse_is_refused_with_the_settings_names(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModalScaling.model_validate(values)


def test_what_modal_accepts_passes() -> None:
    ModalScaling(min_containers=1, max_containers=4, buffer_containers=3, target_inputs=100)
    ModalScaling(buffer_containers=8, max_containers=None)  # no limit: room for any buffer
    ModalScaling(scaledown_window=MIN_SCALEDOWN_WINDOW)
    ModalScaling(scaledown_window=MAX_SCALEDOWN_WINDOW)
    ModalScaling(region=["us", "eu-west", "ap-northeast-1", "us-east1", "us-ashburn-1"])


def test_the_decorators_arguments() -> None:
    scaling = ModalScaling(
        min_containers=1,
        max_containers=5,
        buffer_containers=2,
        scaledown_window=120,
        max_inputs=16,
        target_inputs=8,
        region=["eu-west"],
    )
    assert scaling.modal_autoscaling() == {
        "min_containers": 1,
        "max_containers": 5,
        "buffer_containers": 2,
        "scaledown_window": 120,
        "region": ["eu-west"],
    }
    assert scaling.modal_concurrency() == {"max_inputs": 16, "target_inputs": 8}
    # Unset: what Modal does without them (no buffer, any region).
    defaults = ModalScaling().modal_autoscaling()
    assert (defaults["buffer_containers"], defaults["region"]) == (None, None)


@pytest.mark.parametrize(
    ("value", "regions"),
    [
        ("us-east", ("us-east",)),
        ("us-east, eu-west", ("us-east", "eu-west")),
        ('["eu", "ap"]', ("eu", "ap")),
        ("", ()),
    ],
)
@pytest.mark.parametrize(("prefix", "settings_class"), BACKENDS)
def test_every_backend_reads_the_region_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    settings_class: type[ModalScaling],
    value: str,
    regions: tuple[str, ...],
) -> None:
    monkeypatch.setenv(f"{prefix}REGION", value)
    assert settings_class().region == regions


@pytest.mark.parametrize(("prefix", "settings_class"), BACKENDS)
def test_every_backend_checks_its_scaling_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, prefix: str, settings_class: type[ModalScaling]
) -> None:
    assert issubclass(settings_class, ModalScaling)
    monkeypatch.setenv(f"{prefix}BUFFER_CONTAINERS", "2")
    with pytest.raises(ValidationError, match="leaves no room under max_containers"):
        settings_class()
    monkeypatch.setenv(f"{prefix}MAX_CONTAINERS", "3")
    assert settings_class().buffer_containers == 2


def test_the_backends_keep_their_own_defaults() -> None:
    assert (DummySettings().max_inputs, DummySettings().scaledown_window) == (100, 60)
    assert (ExllamaSettings().max_inputs, ExllamaSettings().scaledown_window) == (64, 300)
    with pytest.raises(ValidationError, match="max_inputs"):  # its own cap stays
        ExllamaSettings(max_inputs=1001)


@NEEDS_LLAMACPP_PLUGIN
def test_the_llamacpp_backend_keeps_its_own_defaults() -> None:
    assert (LlamaCppSettings().max_inputs, LlamaCppSettings().scaledown_window) == (32, 300)
