"""``promptwire new-backend NAME``: a backend plugin project to start from, written from the
templates shipped in ``promptwire/cli/_templates/new_backend`` (a ``__package__`` or ``__name__``
in a path is the package's or the backend's name; ``$name`` and the like in a file are filled in
by ``string.Template``).

The project is the tutorial's in small: pyproject with the entry point, settings, an engine, the
plugin module, and a test of the engine in-process and of its endpoint with the conformance kit,
which passes as written once the project is installed.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from promptwire import __version__
from promptwire.errors import ConfigurationError
from promptwire.plugins.backends import BACKEND_NAME

TEMPLATES = files("promptwire.cli") / "_templates" / "new_backend"
SUFFIX = ".tmpl"


def project_names(name: str) -> dict[str, str]:
    """What the templates fill in, for the backend ``name``."""
    if not BACKEND_NAME.fullmatch(name):
        raise ConfigurationError(
            f"invalid backend name {name!r}: use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    return {
        "name": name,
        "upper": name.upper(),
        "package": f"promptwire_{name}",
        "distribution": f"promptwire-{name.replace('_', '-')}",
        "prefix": "".join(part.capitalize() for part in name.split("_")),
        "promptwire_requirement": _requirement(),
    }


def _requirement() -> str:
    """``promptwire[server]`` at this minor version (0.x minor versions may break plugins)."""
    try:
        major, minor = (int(part) for part in __version__.split(".")[:2])
    except ValueError:  # sources without metadata: "unknown"
        return "promptwire[server]"
    return f"promptwire[server]>={major}.{minor},<{major}.{minor + 1}"


def write_project(name: str, parent: Path) -> Path:
    """Write the project for backend ``name`` into a new directory under ``parent``; returns it.

    Refuses (``ConfigurationError``) a bad name, a name taken (see ``name_taken``), a ``parent``
    that is not a directory, or a project path that is taken (by a file, a directory, or a link
    even to nothing), writing nothing: nothing of the author's is ever overwritten.
    """
    names = project_names(name)
    if (why := name_taken(names)) is not None:
        raise ConfigurationError(f"cannot start a backend named {name!r}: {why}")
    if parent.exists() and not parent.is_dir():
        raise ConfigurationError(f"{parent} is not a directory: give --directory a directory")
    project = parent / names["distribution"]
    if project.is_symlink() or project.exists():  # a dangling link "exists" only as a link
        raise ConfigurationError(f"{project} exists already: choose another name or directory")
    try:
        for template, relative in _templates(TEMPLATES, Path()):
            target = project / Path(
                *(
                    part.replace("__package__", names["package"]).replace("__name__", name)
                    for part in relative.parts
                )
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(Template(template.read_text()).substitute(names))
    except OSError as exc:  # a file where a folder of the path should be, no permission, full
        raise ConfigurationError(
            f"cannot write {project}: {exc.strerror or type(exc).__name__}"
        ) from None
    return project


def name_taken(names: dict[str, str]) -> str | None:
    """Why the project ``names`` (``project_names``) would clash with what is installed, or
    None: a backend or plugin of that name is registered, it is a first-party backend's, or its
    distribution or package is installed (installing the project would replace it, and its
    plugin would fail as a duplicate)."""
    from promptwire.plugins import ENTRY_POINT_GROUP, FIRST_PARTY_DISTRIBUTIONS, get_backends

    name, distribution, package = names["name"], names["distribution"], names["package"]
    if name in get_backends():
        return "an installed plugin registers that backend already (promptwire backends)"
    if name in {entry.name for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}:
        return "an installed plugin has that name already"
    if name in FIRST_PARTY_DISTRIBUTIONS:
        return f"promptwire's own {FIRST_PARTY_DISTRIBUTIONS[name]} has that name already"
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        pass
    else:
        return f"the distribution {distribution} is installed already"
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a broken module of that name: taken all the same
        found = True
    if found:
        return f"a package {package} is importable already"
    return None


def _templates(folder: Traversable, relative: Path) -> list[tuple[Traversable, Path]]:
    """Every template under ``folder``, with its path in the project (``.tmpl`` dropped)."""
    found: list[tuple[Traversable, Path]] = []
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if entry.is_dir():
            found += _templates(entry, relative / entry.name)
        elif entry.name.endswith(SUFFIX):
            found.append((entry, relative / entry.name.removesuffix(SUFFIX)))
    return found
