"""The Modal image every promptwire app starts from: the server's runtime dependencies, pinned to
the same ranges as this installed ``promptwire``, and the local promptwire source.

Imported only by Modal app modules (it imports ``modal``).
"""

from __future__ import annotations

from importlib import metadata

import modal
from packaging.requirements import Requirement

PYTHON_VERSION = "3.11"


def server_requirements() -> list[str]:
    """promptwire's own requirements plus its ``server`` extra, as pip requirement strings."""
    wanted = []
    for line in metadata.requires("promptwire") or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "server"}):
            requirement.marker = None
            wanted.append(str(requirement))
    return sorted(wanted)


def promptwire_image(*local_packages: str, base: modal.Image | None = None) -> modal.Image:
    """``base`` (default: Debian slim) with the server's dependencies and the source of
    ``promptwire`` and ``local_packages`` added."""
    image = base or modal.Image.debian_slim(python_version=PYTHON_VERSION)
    return image.uv_pip_install(*server_requirements()).add_local_python_source(
        "promptwire", *local_packages
    )
