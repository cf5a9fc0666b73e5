"""The Modal image every promptwire app starts from: the server's packages at exactly the versions
``uv.lock`` pins (``modal-requirements.txt``, exported from the lock), and the local promptwire
source.

Imported only by Modal app modules (it imports ``modal``), on two kinds of machine: the one that
deploys, and every container, which imports the app module again. A container has promptwire only
as the source ``add_local_python_source`` uploads (no dist-info, no requirements file), so nothing
here may need more than that at import; the image's recipe is only read on the deploying machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import modal

from promptwire.errors import ConfigurationError

PYTHON_VERSION = "3.11"

#: promptwire and its ``server`` extra, as ``uv.lock`` pins them.
SERVER_REQUIREMENTS = Path(__file__).with_name("modal-requirements.txt")

#: What ``add_local_python_source`` leaves out of the sources it uploads: by Modal's default every
#: file but Python's; here also all but the console page's files (``promptwire.server.console``:
#: its HTML, script, style sheets and the vendored chart library with its licence).
NOT_UPLOADED = ~modal.FilePatternMatcher("**/*.py", "**/server/console/static/**")


def promptwire_image(
    *local_packages: str,
    requirements: Path = SERVER_REQUIREMENTS,
    packages: Sequence[str] = (),
    base: modal.Image | None = None,
) -> modal.Image:
    """``base`` (default: Debian slim) with the ``requirements`` file (default: the server's) and
    ``packages`` installed in one step, and the source of ``promptwire`` and ``local_packages``
    added.

    A plugin whose image needs more than the server passes its own locked requirements file,
    which must include the server's packages too; ``packages`` are what the lock cannot hold
    (wheels by URL), resolved together with it.
    """
    image = base or modal.Image.debian_slim(python_version=PYTHON_VERSION)
    if modal.is_local():
        # Modal reads the file when it builds the image, on this machine; a container only
        # needs the image object (its dependency list must match the deploy's), not its recipe.
        if not requirements.is_file():
            raise ConfigurationError(f"the image's requirements file is missing: {requirements}")
        image = image.uv_pip_install(*packages, requirements=[str(requirements)])
    return image.add_local_python_source("promptwire", *local_packages, ignore=NOT_UPLOADED)


__all__ = ["NOT_UPLOADED", "PYTHON_VERSION", "SERVER_REQUIREMENTS", "promptwire_image"]
