"""Every Modal function, imported as its container imports it (see
``tests.support.modal_container``), for every documented combination of the settings that shape
a deploy: the module imports, the container rebuilds the dependency list the deploy recorded
(same Secrets, Image and Volumes in the same order, so the same count Modal checks), it reads
the same settings, and the modules the function imports when it runs are in its Image."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import product
from typing import Any

import pytest

from tests.support.locked_requirements import ROOT
from tests.support.modal_container import DeploySide, Target, deploy_side, run_container
from tests.support.optional import llamacpp_param

DUMMY = "PROMPTWIRE_MODAL_DUMMY__"
EXLLAMA = "PROMPTWIRE_MODAL_EXLLAMA__"
LLAMACPP = "PROMPTWIRE_LLAMACPP__"

#: Stand-in contents of the Modal Secrets the settings below name.
NAMED_SECRETS = {
    "promptwire-api-key": {"PROMPTWIRE_API_KEY": "container-test-key"},
    "my-api-key": {"PROMPTWIRE_API_KEY": "container-test-key-2"},
    "hf-token": {"HF_TOKEN": "hf_container_test"},
}

SERVER_REQUIREMENTS = ROOT / "core/src/promptwire/modal/modal-requirements.txt"
EXLLAMA_DIR = ROOT / "plugins/modal_exllama/src/promptwire_modal_exllama"
LLAMACPP_DIR = ROOT / "plugins/llamacpp/src/promptwire_llamacpp"

TARGETS = {
    "dummy web": Target(
        module="promptwire_modal_dummy.modal_app",
        attribute="web",
        requirements=SERVER_REQUIREMENTS,
        runtime_imports=("promptwire.server", "promptwire_modal_dummy.engine"),
        call_web=True,
    ),
    "exllama download_model": Target(
        module="promptwire_modal_exllama.modal_app",
        attribute="download_model",
        requirements=EXLLAMA_DIR / "modal-requirements-download.txt",
        runtime_imports=("promptwire_modal_exllama.weights", "huggingface_hub"),
    ),
    "exllama Server": Target(
        module="promptwire_modal_exllama.modal_app",
        attribute="Server",
        requirements=EXLLAMA_DIR / "modal-requirements-gpu.txt",
        web_method="web",
        runtime_imports=(
            "promptwire.server",
            "promptwire_modal_exllama.runtime",
            "promptwire_modal_exllama.weights",
            "promptwire_modal_exllama.chat_template",
        ),
    ),
    "llamacpp Server": Target(
        module="promptwire_llamacpp.modal_app",
        attribute="Server",
        requirements=LLAMACPP_DIR / "modal-requirements.txt",
        web_method="web",
        runtime_imports=(
            "promptwire.server",
            "promptwire_llamacpp.engine",
            "promptwire_llamacpp.runtime",
            "llama_cpp",
            "jinja2",
        ),
    ),
}

#: Settings only the deploying machine uses (the container never sees them).
DEPLOY_ONLY = {"dummy web": set(), "exllama download_model": {"model_dir", "request_params"}}
DEPLOY_ONLY["exllama Server"] = DEPLOY_ONLY["exllama download_model"]
DEPLOY_ONLY["llamacpp Server"] = set()


#: The deploying machine's metrics, request log and console settings, which its containers must
#: serve by; and OpenTelemetry, which they must not try (their images do not have it).
OBSERVABILITY = {
    "PROMPTWIRE_METRICS_PUBLIC": "true",
    "PROMPTWIRE_CONSOLE": "false",
    "PROMPTWIRE_LOG_FORMAT": "json",
    "PROMPTWIRE_LOG_PROMPTS": "true",
    "PROMPTWIRE_REQUEST_LOG": "false",
    "PROMPTWIRE_OPENTELEMETRY": "true",
}

#: The deploying machine's server limits, every one changed from its default: the app a container
#: builds must have them (``app.state.limits``).
LIMITS = {
    "PROMPTWIRE_MAX_BODY_BYTES": "2097152",
    "PROMPTWIRE_MAX_IN_FLIGHT": "7",
    "PROMPTWIRE_BODY_TIMEOUT": "12.5",
    "PROMPTWIRE_SEND_TIMEOUT": "45",
    "PROMPTWIRE_SHUTDOWN_GRACE": "20",
}
LIMITS_AS_SET = {
    "max_body_bytes": 2097152,
    "max_in_flight": 7,
    "body_timeout": 12.5,
    "send_timeout": 45.0,
    "shutdown_grace": 20.0,
}


def _dummy_cases() -> dict[str, dict[str, str]]:
    return {
        "defaults": {},
        "limits set": LIMITS,
        "open endpoint": {f"{DUMMY}API_KEY_SECRET": ""},
        "memory snapshot off": {f"{DUMMY}MEMORY_SNAPSHOT": "false"},
        "observability set": OBSERVABILITY,
        "everything set": {
            f"{DUMMY}API_KEY_SECRET": "my-api-key",
            f"{DUMMY}REPLY": "hi there",
            f"{DUMMY}ECHO": "true",
            f"{DUMMY}FIRST_TOKEN_DELAY": "0.5",
            f"{DUMMY}TOKENS_PER_SECOND": "12.5",
            f"{DUMMY}MODEL_NAME": "dummy-2",
            f"{DUMMY}APP_NAME": "my-dummy",
            f"{DUMMY}MAX_INPUTS": "7",
            f"{DUMMY}MIN_CONTAINERS": "2",
            f"{DUMMY}MAX_CONTAINERS": "3",
            f"{DUMMY}BUFFER_CONTAINERS": "1",
            f"{DUMMY}TARGET_INPUTS": "5",
            f"{DUMMY}REGION": "us-east,us-west",
            f"{DUMMY}SCALEDOWN_WINDOW": "30",
            f"{DUMMY}TIMEOUT": "120",
        },
    }


def _exllama_cases() -> dict[str, dict[str, str]]:
    """Every combination of the settings that change the functions' Secrets and auth, then one
    with every other deploy setting changed."""
    cases = {}
    for api_key, hf_token, proxy_auth in product(
        ("promptwire-api-key", ""), ("", "hf-token"), ("false", "true")
    ):
        name = (
            f"api key {api_key or 'none'}, hf token {hf_token or 'none'}, proxy auth {proxy_auth}"
        )
        cases[name] = {
            f"{EXLLAMA}API_KEY_SECRET": api_key,
            f"{EXLLAMA}HF_TOKEN_SECRET": hf_token,
            f"{EXLLAMA}PROXY_AUTH": proxy_auth,
        }
    for memory, gpu in (("false", "false"), ("true", "true")):  # the default is true, false
        cases[f"memory snapshot {memory}, gpu snapshot {gpu}"] = {
            f"{EXLLAMA}MEMORY_SNAPSHOT": memory,
            f"{EXLLAMA}GPU_SNAPSHOT": gpu,
        }
    cases["observability set"] = OBSERVABILITY
    cases["limits set"] = LIMITS
    cases["everything set"] = {
        f"{EXLLAMA}API_KEY_SECRET": "my-api-key",
        f"{EXLLAMA}HF_TOKEN_SECRET": "hf-token",
        f"{EXLLAMA}HF_REPO": "someone/Model-exl2",
        f"{EXLLAMA}HF_REVISION": "6.0bpw",
        f"{EXLLAMA}VOLUME_NAME": "my-models",
        f"{EXLLAMA}DOWNLOAD_ON_START": "false",
        f"{EXLLAMA}DOWNLOAD_TIMEOUT": "600",
        f"{EXLLAMA}APP_NAME": "my-llm",
        f"{EXLLAMA}MODEL_NAME": "my-model",
        f"{EXLLAMA}GPU": "H100",
        f"{EXLLAMA}CACHE_MODE": "Q4",
        f"{EXLLAMA}CACHE_SIZE": "32768",
        f"{EXLLAMA}MAX_SEQ_LEN": "8192",
        f"{EXLLAMA}MAX_BATCH_SIZE": "16",
        f"{EXLLAMA}TEMPERATURE": "0.2",
        f"{EXLLAMA}TIMEOUT": "900",
        f"{EXLLAMA}STARTUP_TIMEOUT": "1800",
        f"{EXLLAMA}SCALEDOWN_WINDOW": "60",
        f"{EXLLAMA}MIN_CONTAINERS": "1",
        f"{EXLLAMA}MAX_CONTAINERS": "null",
        f"{EXLLAMA}MAX_INPUTS": "32",
        f"{EXLLAMA}TARGET_INPUTS": "16",
        f"{EXLLAMA}BUFFER_CONTAINERS": "2",
        f"{EXLLAMA}REGION": '["eu"]',
        f"{EXLLAMA}MEMORY_SNAPSHOT": "true",
        f"{EXLLAMA}GPU_SNAPSHOT": "true",
        f"{EXLLAMA}WARMUP": "false",
        f"{EXLLAMA}MODEL_DIR": "/deploying/machine/only",
        f"{EXLLAMA}REQUEST_PARAMS": '{"top_k": 40}',
    }
    return cases


def _llamacpp_cases() -> dict[str, dict[str, str]]:
    """The defaults (a CPU container, the bundled model), a GPU with a model in the Volume, no
    auth and no snapshot, and every other deploy setting changed."""
    return {
        "defaults": {},
        "gpu, model in the volume": {
            f"{LLAMACPP}GPU": "L4",
            f"{LLAMACPP}GPU_LAYERS": "-1",
            f"{LLAMACPP}VOLUME_MODEL": "qwen2.5-7b-instruct-q4_k_m.gguf",
        },
        "open endpoint, memory snapshot off": {
            f"{LLAMACPP}API_KEY_SECRET": "",
            f"{LLAMACPP}MEMORY_SNAPSHOT": "false",
        },
        "observability set": OBSERVABILITY,
        "limits set": LIMITS,
        "everything set": {
            f"{LLAMACPP}API_KEY_SECRET": "my-api-key",
            f"{LLAMACPP}MODEL_NAME": "smol",
            f"{LLAMACPP}CONTEXT_SIZE": "4096",
            f"{LLAMACPP}PARALLEL": "4",
            f"{LLAMACPP}THREADS": "3",
            f"{LLAMACPP}BATCH_SIZE": "256",
            f"{LLAMACPP}MAX_TOKENS": "100",
            f"{LLAMACPP}TEMPERATURE": "0.2",
            f"{LLAMACPP}REPEAT_PENALTY": "1.1",
            f"{LLAMACPP}APP_NAME": "my-llamacpp",
            f"{LLAMACPP}CPU": "8",
            f"{LLAMACPP}MEMORY": "8192",
            f"{LLAMACPP}VOLUME": "my-ggufs",
            f"{LLAMACPP}MAX_INPUTS": "16",
            f"{LLAMACPP}MIN_CONTAINERS": "1",
            f"{LLAMACPP}MAX_CONTAINERS": "null",
            f"{LLAMACPP}BUFFER_CONTAINERS": "1",
            f"{LLAMACPP}TARGET_INPUTS": "8",
            f"{LLAMACPP}REGION": "ap-northeast-1",
            f"{LLAMACPP}SCALEDOWN_WINDOW": "60",
            f"{LLAMACPP}TIMEOUT": "900",
        },
    }


CASES = {
    "dummy web": _dummy_cases(),
    "exllama download_model": _exllama_cases(),
    "exllama Server": _exllama_cases(),
    "llamacpp Server": _llamacpp_cases(),
}


@pytest.fixture(scope="module")
def containers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]]]:
    """Deploy each target under every case, then import it in one stand-in container per
    target (the first test to ask does the work; the rest reuse it)."""
    done: dict[str, tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]] = {}

    def run(target_name: str) -> tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]:
        if target_name not in done:
            target = TARGETS[target_name]
            deploys = {
                name: deploy_side(target, environment, NAMED_SECRETS)
                for name, environment in CASES[target_name].items()
            }
            workdir = tmp_path_factory.mktemp("container")
            done[target_name] = (
                deploys,
                run_container(
                    workdir, target, deploys, preload=("pydantic", "pydantic_settings", "fastapi")
                ),
            )
        return done[target_name]

    yield run


def _params(target_name: str, *rest: str) -> Any:
    """One parametrize case; the llamacpp app's skip without its distribution."""
    if TARGETS[target_name].module.startswith("promptwire_llamacpp."):
        return llamacpp_param(target_name, *rest)
    return (target_name, *rest) if rest else target_name


TARGET_CASES = [_params(target, case) for target, cases in CASES.items() for case in cases]


@pytest.mark.parametrize(("target_name", "case"), TARGET_CASES)
def test_the_container_rebuilds_what_the_deploy_recorded(
    containers: Callable[[str], tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]],
    target_name: str,
    case: str,
) -> None:
    deploys, reports = containers(target_name)
    deploy, report = deploys[case], reports[case]
    assert "error" not in report, report["error"]
    assert report["dependencies"] == deploy.dependencies
    deploy_only = DEPLOY_ONLY[target_name]
    sent = {k: v for k, v in deploy.settings.items() if k not in deploy_only}
    assert {k: v for k, v in report["settings"].items() if k not in deploy_only} == sent
    if target_name != "exllama download_model":  # the servers serve as the deploy said
        assert report["observability"] == deploy.observability
        assert report["limits"] == deploy.limits


SERVERS = [target for target in TARGETS if target != "exllama download_model"]


@pytest.mark.parametrize("target_name", [_params(target) for target in SERVERS])
def test_every_server_limit_reaches_the_app_the_container_builds(
    containers: Callable[[str], tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]],
    target_name: str,
) -> None:
    """PROMPTWIRE_MAX_IN_FLIGHT, the body and send timeouts, the body cap and the shutdown
    grace set on the deploying machine are the limits of the app the container serves; with
    none set, it has the defaults (and no cap on requests in flight)."""
    from promptwire.settings import ServerLimits

    deploys, reports = containers(target_name)
    assert deploys["limits set"].limits == LIMITS_AS_SET
    assert reports["limits set"]["limits"] == LIMITS_AS_SET
    unset = reports["observability set"]["limits"]  # a case that sets no limit
    assert unset == ServerLimits().model_dump(mode="json")
    assert unset["max_in_flight"] is None


#: The enter hooks of the ExLlamaV2 server, before and after a memory snapshot.
WITH_SNAPSHOT = {"pre_snapshot": ["prepare"], "post_snapshot": ["start"]}
WITHOUT_SNAPSHOT = {"pre_snapshot": [], "post_snapshot": ["prepare", "start"]}


@pytest.mark.parametrize(("target_name", "case"), TARGET_CASES)
def test_the_snapshot_settings_reach_the_definition_and_the_container(
    containers: Callable[[str], tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]],
    target_name: str,
    case: str,
) -> None:
    """What Modal is told (the definition's snapshot options) follows the settings, and the
    container runs the server's enter hooks on the right side of the snapshot: the imports
    before it, the GPU work after it (unless GPU memory is snapshotted too)."""
    deploys, reports = containers(target_name)
    deploy, report = deploys[case], reports[case]
    assert "error" not in report, report["error"]
    settings = deploy.settings
    if target_name == "exllama download_model":  # a CPU job that runs once: nothing to restore
        assert deploy.snapshot == {"enable_memory_snapshot": False, "experimental_options": {}}
        return
    gpu = settings.get("gpu_snapshot", False)
    assert deploy.snapshot == {
        "enable_memory_snapshot": settings["memory_snapshot"],
        "experimental_options": {"enable_gpu_snapshot": "True"} if gpu else {},
    }
    if target_name == "exllama Server":
        hooks = WITH_SNAPSHOT if settings["memory_snapshot"] else WITHOUT_SNAPSHOT
        assert report["enter_hooks"] == hooks


def test_every_snapshot_combination_is_covered() -> None:
    """The cases above hold each documented combination, and the one Modal cannot run (a GPU
    snapshot without a memory snapshot) is refused by the settings."""
    from promptwire_modal_exllama.settings import ExllamaSettings
    from pydantic import ValidationError

    combinations = {
        (
            case.get(f"{EXLLAMA}MEMORY_SNAPSHOT", "true"),
            case.get(f"{EXLLAMA}GPU_SNAPSHOT", "false"),
        )
        for case in CASES["exllama Server"].values()
    }
    assert combinations == {("true", "false"), ("false", "false"), ("true", "true")}
    assert {
        case.get(f"{DUMMY}MEMORY_SNAPSHOT", "true") for case in CASES["dummy web"].values()
    } == {"true", "false"}
    with pytest.raises(ValidationError, match="gpu_snapshot needs memory_snapshot"):
        ExllamaSettings(memory_snapshot=False, gpu_snapshot=True)


def test_the_stand_in_container_sees_only_what_a_container_has(
    containers: Callable[[str], tuple[dict[str, DeploySide], dict[str, dict[str, Any]]]],
) -> None:
    """The tier proves something only if the child cannot see the workspace: no promptwire
    distribution, nothing on ``sys.path`` but the standard library, the uploaded sources and the
    Image's packages, and no variable but the function's and Modal's."""
    deploys, reports = containers("dummy web")
    seen = reports["defaults"]["visible"]
    assert seen["is_local"] is False
    assert seen["distributions"] == []
    assert all(
        path.startswith((seen["base_prefix"], *seen["added"])) for path in seen["sys_path"]
    ), seen["sys_path"]
    sources = seen["added"][0]
    assert seen["promptwire_modules"]
    assert all(path.startswith(sources) for path in seen["promptwire_modules"])
    assert set(seen["environment"]) == {"PATH", "HOME", *deploys["defaults"].environment}
    assert "PROMPTWIRE_API_KEY" in seen["environment"]  # from the stand-in named Secret
