"""The Modal plugins declare the oldest ``modal`` that has every API their apps use."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.locked_requirements import ROOT

#: The modal release that added each API the apps and ``promptwire_image`` call.
INTRODUCED_IN = {
    "Image.uv_pip_install": "1.1.0",
    "startup_timeout= (modal_exllama's Server)": "1.1.4",
    "env= on functions and classes": "1.2.0",
}


@pytest.mark.parametrize("plugin", ["modal_dummy", "modal_exllama", "llamacpp"])
def test_the_declared_modal_has_every_api_used(plugin: str) -> None:
    project = tomllib.loads((ROOT / "plugins" / plugin / "pyproject.toml").read_text())
    (modal,) = [
        requirement
        for line in project["project"]["dependencies"]
        if (requirement := Requirement(line)).name == "modal"
    ]
    oldest = min(
        Version(spec.version) for spec in modal.specifier if spec.operator in (">=", "==", "~=")
    )
    needed = max(INTRODUCED_IN.values(), key=Version)
    assert oldest >= Version(needed), f"{plugin} accepts modal {oldest}, the apps need {needed}"
