"""Run inside a stand-in Modal container (``python -I -S``, see ``tests.support.modal_container``):
import a Modal app module the way Modal's container entrypoint does and report what it found.

Only the standard library is imported before ``sys.path`` is set from the request, so nothing of
the test workspace leaks in. Like the container entrypoint, the process imports ``modal`` first
(and, to keep the tier fast, the third-party packages named in ``preload``); then each case runs
in a fork of it, with the environment replaced by the case's and the app module imported fresh.
Each case's report is JSON: the function's dependencies as the container computes them (Modal
compares their number with the object ids the deploy recorded), the settings the module read,
and whether the modules the function imports when it runs can be imported.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any


def describe(dependency: Any) -> str:
    """A dependency as both sides can compare it: an Image by kind (its recipe is built on the
    deploying machine only), anything else by Modal's own description (a Secret's or Volume's
    name, or the variable names of an ``env=`` Secret; never values)."""
    kind = type(dependency).__name__.lstrip("_")
    return kind if kind == "Image" else f"{kind}: {dependency!r}"


def import_service(case: dict[str, Any]) -> Any:
    """The service, imported by Modal's own import code as the container runs it."""
    import modal
    from modal._runtime import execution_context
    from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager
    from modal._runtime.user_code_imports import (
        import_class_service,
        import_single_function_service,
    )
    from modal_proto import api_pb2

    function_def = api_pb2.Function(
        module_name=case["module"],
        function_name=case["function_name"],
        implementation_name=case["implementation_name"],
        is_class=case["is_class"],
        definition_type=api_pb2.Function.DEFINITION_TYPE_FILE,
    )
    # Modal creates the task's lifecycle manager before it imports user code; that it exists is
    # what makes ``modal.is_local()`` false.
    _TaskLifecycleManager("ta-container-test", "fu-container-test", function_def, None, None)
    assert not modal.is_local()
    with execution_context._import_context():
        if case["is_class"]:
            service = import_class_service(
                function_def,
                api_pb2.Object(object_id="fu-container-test"),
                "cs-container-test",
                None,
                None,
                (),
                {},
            )
        else:
            service = import_single_function_service(function_def, None)
    assert service.service_deps is not None, (
        "Modal found no dependencies: the function is not global"
    )
    return service


def build_web_app(service: Any, case: dict[str, Any]) -> Any:
    """The ASGI app, as the container gets it from the web endpoint: a function's own callable,
    or a class's web method on its instance, once its enter hooks would have loaded the engine
    (a stand-in engine: the real one needs a GPU or a model)."""
    if case["call_web"]:
        return service._user_defined_callable()
    instance = service.user_cls_instance
    instance.engine = stand_in_engine()
    method = service._partial_functions[case["web_method"]].raw_f
    return method.__get__(instance)()


def stand_in_engine() -> Any:
    """An engine that answers nothing: building the app needs one, serving is not checked here."""
    from collections.abc import AsyncGenerator

    from promptwire.engine import Engine, EngineEvent

    class StandIn(Engine[Any]):
        model_name = "stand-in"

        async def stream(self, prepared: Any) -> AsyncGenerator[EngineEvent, None]:
            return
            yield

    return StandIn()


def enter_hooks(service: Any) -> dict[str, list[str]]:
    """A class's enter methods, as the container runs them: those before the memory snapshot
    (``snap=True``), then those after it, each in the order Modal calls them."""
    from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags

    user_cls = type(service.user_cls_instance)
    return {
        "pre_snapshot": list(
            _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
        ),
        "post_snapshot": list(
            _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
        ),
    }


def visible(case: dict[str, Any]) -> dict[str, Any]:
    """What the module could see: for the tier's own check that nothing of the workspace leaks
    in."""
    from importlib import metadata

    import modal

    return {
        "is_local": modal.is_local(),
        "distributions": sorted(
            name
            for dist in metadata.distributions()
            if (name := dist.metadata["Name"]).lower().startswith("promptwire")
        ),
        "sys_path": sys.path,
        "promptwire_modules": sorted(
            str(getattr(module, "__file__", None))
            for name, module in sys.modules.items()
            if name.split(".")[0].startswith("promptwire")
        ),
        "base_prefix": sys.base_prefix,
        "added": case["sys_path"],
        "environment": sorted(os.environ),
    }


def observability_settings() -> dict[str, Any]:
    """What the server will read for its metrics, request log and traces."""
    from promptwire.settings import OBSERVABILITY_FIELDS, PromptwireSettings

    fields = {*OBSERVABILITY_FIELDS, "opentelemetry"}
    return PromptwireSettings().model_dump(mode="json", include=fields)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    try:
        service = import_service(case)
        report["dependencies"] = [describe(dep) for dep in service.service_deps]
        if case["is_class"]:
            report["enter_hooks"] = enter_hooks(service)
        report["settings"] = sys.modules[case["module"]].settings.model_dump(mode="json")
        report["observability"] = observability_settings()
        if case["call_web"] or case["web_method"]:
            app = build_web_app(service, case)
            report["limits"] = app.state.limits.model_dump(mode="json")
        for name in case["runtime_imports"]:
            importlib.import_module(name)
        report["visible"] = visible(case)
    except BaseException:
        report["error"] = traceback.format_exc()
    return report


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        request = json.load(file)
    # As in a container: the uploaded sources (/root, on PYTHONPATH) before the standard
    # library, the image's site-packages after it.
    sys.path.insert(0, request["sources"])
    sys.path.append(request["site"])
    for case in request["cases"]:
        case["sys_path"] = [request["sources"], request["site"]]
    import modal  # noqa: F401  (the container entrypoint has it imported before user code)

    for name in request["preload"]:
        importlib.import_module(name)
    for case in request["cases"]:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ.clear()
                os.environ.update(case["environment"])
                report = run_case(case)
                with open(case["report"], "w", encoding="utf-8") as file:
                    json.dump(report, file)
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
