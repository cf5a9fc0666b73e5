"""A stand-in Modal container, offline: import an app module as a container does and compare
what it finds with what the deploy recorded.

Modal deploys a function with the list of its object dependencies (Secrets, the Image, Volumes,
in that order). A container imports the app module again, in its own environment, rebuilds the
list and refuses to start unless it has as many entries ("Function has N dependencies but
container got M object ids"). The container has:

- the sources ``add_local_python_source`` (and the entrypoint mount) upload, under ``/root``,
  and no promptwire dist-info: here, exactly the files Modal would upload for the function's
  Image and mounts, copied to a temporary ``root/``;
- the packages its Image installs plus the Modal client Modal adds: here, a site directory of
  links to the workspace's installed distributions named in the Image's locked requirements
  file, and ``modal`` with its dependencies;
- ``modal.is_local()`` false: Modal creates the task's lifecycle manager before the import;
- only the environment the function was given: the variables of its ``env=`` Secret, those of
  its named Secrets (stand-in values), and the ones Modal sets (``MODAL_IS_REMOTE=1``, ...).

The child interpreter is the workspace's Python run with ``-I -S``: no site-packages, no
``PYTHON*`` variables, no user site, nothing on ``sys.path`` but the standard library, the
sources and the site directory. It imports ``modal`` (as the container entrypoint does before
any user code) and the slow third-party imports, then runs each settings combination in a fork
of itself, with its environment replaced and the app module imported afresh.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import Requirement

CHILD = Path(__file__).with_name("modal_container_child.py")

#: Variables Modal sets in every Function's container (https://modal.com/docs/guide/environment_variables).
MODAL_RUNTIME_ENVIRONMENT = {
    "MODAL_IS_REMOTE": "1",
    "MODAL_TASK_ID": "ta-container-test",
    "MODAL_IMAGE_ID": "im-container-test",
    "MODAL_ENVIRONMENT": "main",
    "MODAL_REGION": "us-east-1",
    "MODAL_CLOUD_PROVIDER": "CLOUD_PROVIDER_AWS",
    "MODAL_IDENTITY_TOKEN": "container-test-identity",
}


@dataclass(frozen=True)
class Target:
    """One Modal function (or class) of an app module, as the container looks it up."""

    module: str
    """The app module, as ``modal deploy -m`` and the container import it."""
    attribute: str
    """Its name in the module: a ``modal.Function`` or a ``modal.Cls``."""
    requirements: Path
    """The locked requirements file its Image installs."""
    runtime_imports: tuple[str, ...] = ()
    """Modules its body imports when it runs (those that need no GPU)."""
    call_web: bool = False
    """Also call the function as the container does for a web endpoint (it builds the app)."""
    web_method: str | None = None
    """A class's web endpoint method: called as the container calls it, once the enter hooks
    would have loaded the engine (a stand-in engine here), to build the app."""


@dataclass
class DeploySide:
    """What the deploying machine sends for one function."""

    dependencies: list[str]
    environment: dict[str, str]
    """The container's environment, from the function's Secrets (named ones stood in for)."""
    files: dict[PurePosixPath, Path]
    """Remote path -> local file, for every source file Modal uploads for it."""
    function_name: str
    implementation_name: str
    is_class: bool
    settings: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    """The memory snapshot options the function definition sent to Modal would carry."""
    observability: dict[str, Any] = field(default_factory=dict)
    """The server's observability settings (metrics, request log) on the deploying machine."""
    limits: dict[str, Any] = field(default_factory=dict)
    """The server limits (``ServerLimits``) on the deploying machine."""


def describe(dependency: Any) -> str:
    """As the child describes it (the two must agree)."""
    kind = type(dependency).__name__.lstrip("_")
    return kind if kind == "Image" else f"{kind}: {dependency!r}"


def service_function(module: Any, attribute: str) -> tuple[Any, bool]:
    import modal
    from modal._utils.async_utils import synchronizer

    obj = getattr(module, attribute)
    if isinstance(obj, modal.Cls):
        return synchronizer._translate_in(obj)._get_class_service_function(), True
    if isinstance(obj, modal.Function):
        return synchronizer._translate_in(obj), False
    raise TypeError(f"{attribute} is neither a modal.Function nor a modal.Cls")


#: The options of Modal's function definition that decide memory snapshots: the definition's
#: ``checkpointing_enabled`` and ``experimental_options`` (``enable_gpu_snapshot``).
SNAPSHOT_OPTIONS = ("enable_memory_snapshot", "experimental_options")


def snapshot_options(function: Any) -> dict[str, Any]:
    """The snapshot options Modal will put in ``function``'s definition when it is deployed.

    Modal builds the definition (an ``api_pb2.Function``) only while deploying, from values its
    loader closes over; they are read there, offline, so the check sees exactly what a deploy
    would send. Should a Modal release rename them, this fails loudly, not silently.
    """
    options = {name: definition_value(function, name) for name in SNAPSHOT_OPTIONS}
    options["experimental_options"] = dict(options["experimental_options"] or {})
    return options


def definition_value(function: Any, name: str) -> Any:
    """A value Modal's loader of ``function`` (a ``_Function``) closes over and puts in the
    function's definition when deploying (``enable_memory_snapshot``, ``autoscaler_settings``)."""
    load = function._load
    cells = dict(zip(load.__code__.co_freevars, load.__closure__ or (), strict=True))
    if name not in cells:
        raise AssertionError(f"Modal's function loader no longer has {name!r}: update the tier")
    return cells[name].cell_contents


def _uploaded_files(function: Any) -> dict[PurePosixPath, Path]:
    """The files of the function's mount layers (``add_local_*`` on its Image, found through the
    Image's dependency graph) and of its entrypoint mount, as Modal selects them for upload."""
    from modal._image import _Image
    from modal.mount import _Mount, _select_files

    mounts: list[Any] = list(function._spec.mounts)
    images: list[Any] = [function._spec.image]
    seen: set[int] = set()
    while images:
        image = images.pop()
        if id(image) in seen:
            continue
        seen.add(id(image))
        for dep in image._deps_():
            if isinstance(dep, _Image):
                images.append(dep)
            elif isinstance(dep, _Mount):
                mounts.append(dep)
    files: dict[PurePosixPath, Path] = {}
    for mount in mounts:
        if mount._entries is None:  # looked up by name (the Modal client's own mount)
            continue
        for local, remote in _select_files(mount._entries):
            files[PurePosixPath(remote)] = Path(local)
    return files


def deploy_side(
    target: Target,
    environment: Mapping[str, str],
    named_secrets: Mapping[str, Mapping[str, str]],
) -> DeploySide:
    """What deploying ``target`` with the deploying machine's ``environment`` (on top of this
    process's) sends: the app module is imported afresh, as ``promptwire deploy`` does."""
    from modal.secret import _Secret

    saved = dict(os.environ)
    sys.modules.pop(target.module, None)
    try:
        os.environ.update(environment)
        module = importlib.import_module(target.module)
        observability = observability_settings()
        limits = limit_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        sys.modules.pop(target.module, None)
    function, is_class = service_function(module, target.attribute)
    deps = list(function._deps_(only_explicit_mounts=True))
    environment = dict(MODAL_RUNTIME_ENVIRONMENT)
    for dep in deps:
        if not isinstance(dep, _Secret):
            continue
        load_env_dict = getattr(dep, "_load_env_dict", None)
        if load_env_dict is not None:  # Secret.from_dict, which is what env= becomes
            environment.update(load_env_dict())
            continue
        name = repr(dep).removeprefix("modal.Secret.from_name('").removesuffix("')")
        if name not in named_secrets:
            raise KeyError(f"no stand-in contents for the Modal Secret {name!r}")
        environment.update(named_secrets[name])
    return DeploySide(
        dependencies=[describe(dep) for dep in deps],
        environment=environment,
        files=_uploaded_files(function),
        function_name=function._source_info.function_name,
        implementation_name=function._source_info.implementation_name,
        is_class=is_class,
        settings=module.settings.model_dump(mode="json"),
        snapshot=snapshot_options(function),
        observability=observability,
        limits=limits,
    )


def observability_settings() -> dict[str, Any]:
    """The server's observability settings a container must serve by: those this process's
    environment gives (the child reads them the same way), but never OpenTelemetry, which the
    images cannot run."""
    from promptwire.settings import OBSERVABILITY_FIELDS, PromptwireSettings

    found = PromptwireSettings().model_dump(mode="json", include=set(OBSERVABILITY_FIELDS))
    return {**found, "opentelemetry": False}


def limit_settings() -> dict[str, Any]:
    """The server limits this process's environment gives (``PROMPTWIRE_MAX_IN_FLIGHT``, ...):
    those the app built in a container must have."""
    from promptwire.settings import SERVER_LIMIT_FIELDS, PromptwireSettings

    return PromptwireSettings().model_dump(mode="json", include=set(SERVER_LIMIT_FIELDS))


def locked_names(requirements: Path) -> list[str]:
    """Distribution names a locked requirements file installs on Linux x86-64 (the container)."""
    names = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(
            {"sys_platform": "linux", "platform_machine": "x86_64"}
        ):
            names.append(requirement.name)
    return names


def dependency_closure(names: Iterable[str]) -> set[str]:
    """``names`` and everything they require, as installed here (canonical names; those not
    installed here are kept, and ``build_site`` reports them)."""
    seen: set[str] = set()
    todo = [(name, frozenset[str]()) for name in names]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if (key, extras) in done:
            continue
        done.add((key, extras))
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


def build_site(site: Path, names: Iterable[str]) -> list[str]:
    """Link the installed distributions ``names`` (modules and dist-info) into ``site``; returns
    the names not installed here (the GPU stack, which the workspace never installs)."""
    site.mkdir(parents=True)
    missing = []
    for name in sorted(set(names)):
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        base = Path(str(distribution.locate_file("")))
        tops = {f.parts[0] for f in distribution.files or () if f.parts[0] != ".."}
        for top in sorted(tops):
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    return missing


def build_root(root: Path, files: Mapping[PurePosixPath, Path]) -> Path:
    """Copy the uploaded files to ``root``, which stands for the container's ``/``; returns the
    stand-in for ``/root`` (on the container's ``sys.path``)."""
    for remote, local in files.items():
        target = root / remote.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
    home = root / "root"
    home.mkdir(parents=True, exist_ok=True)
    return home


def run_container(
    workdir: Path,
    target: Target,
    deploys: Mapping[str, DeploySide],
    *,
    preload: Iterable[str] = (),
    timeout: float = 120,
) -> dict[str, dict[str, Any]]:
    """Import ``target``'s module in a stand-in container once per deploy in ``deploys`` (each
    with its own environment); returns the child's report for each."""
    first, *others = deploys.values()
    if any(other.files != first.files for other in others):
        raise AssertionError("the uploaded sources differ between settings")
    home = build_root(workdir / "container", first.files)
    site = workdir / "site"
    missing = build_site(site, dependency_closure(["modal", *locked_names(target.requirements)]))
    cases = []
    for name, deploy in deploys.items():
        cases.append(
            {
                "module": target.module,
                "function_name": deploy.function_name,
                "implementation_name": deploy.implementation_name,
                "is_class": deploy.is_class,
                "runtime_imports": list(target.runtime_imports),
                "call_web": target.call_web,
                "web_method": target.web_method,
                "environment": {"PATH": os.defpath, "HOME": str(home), **deploy.environment},
                "report": str(workdir / f"report-{len(cases)}.json"),
                "name": name,
            }
        )
    request = {"sources": str(home), "site": str(site), "preload": list(preload), "cases": cases}
    request_file = workdir / "request.json"
    request_file.write_text(json.dumps(request), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(CHILD), str(request_file)],
        cwd=home,
        env={"PATH": os.defpath, "HOME": str(home), **MODAL_RUNTIME_ENVIRONMENT},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    reports: dict[str, dict[str, Any]] = {}
    for case in cases:
        path = Path(case["report"])
        if not path.exists():
            raise RuntimeError(
                f"the container child failed ({result.returncode}; not installed here: "
                f"{missing}):\n{result.stderr}"
            )
        reports[case["name"]] = json.loads(path.read_text(encoding="utf-8"))
    return reports
