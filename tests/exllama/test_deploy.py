"""``promptwire deploy``, offline: the error paths, and finding the endpoint URL of an app module.
No test here reaches Modal: without credentials the client fails before any network call."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from promptwire.errors import ConfigurationError
from promptwire.modal.deploy import endpoint_url

from tests.support.installed_plugin import run_cli


def _no_modal_credentials(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "MODAL_CONFIG_PATH": str(home / "missing-modal.toml"),
        "MODAL_TOKEN_ID": "",
        "MODAL_TOKEN_SECRET": "",
        "MODAL_PROFILE": "",
    }


@pytest.mark.parametrize("backend", ["modal_exllama", "modal_dummy"])
def test_deploy_without_modal_credentials_says_what_to_do(tmp_path: Path, backend: str) -> None:
    result = run_cli("deploy", backend, env=_no_modal_credentials(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()  # one error line, however long
    assert "Modal is not set up on this machine" in line and "modal setup" in line
    assert result.stdout == ""


def test_the_download_command_without_credentials_says_what_to_do(tmp_path: Path) -> None:
    result = run_cli("exllama", "download", env=_no_modal_credentials(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "modal setup" in result.stderr


def test_deploying_an_unknown_backend_names_the_installed_ones() -> None:
    result = run_cli("deploy", "nope")
    assert result.returncode == 1
    assert "unknown backend 'nope'" in result.stderr and "modal_exllama" in result.stderr


def test_a_backend_without_a_modal_app_cannot_be_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    from promptwire.modal import deploy
    from promptwire.plugins import RegisteredBackend
    from promptwire.plugins.backends import Backend

    local_only = RegisteredBackend(Backend(name="local_only"), plugin=None)  # type: ignore[arg-type]
    monkeypatch.setattr("promptwire.plugins.get_backend", lambda name: local_only)
    with pytest.raises(ConfigurationError, match="no Modal app"):
        deploy.deploy_backend("local_only")


def test_the_endpoint_url_comes_from_the_app_module() -> None:
    assert endpoint_url(SimpleNamespace(endpoint_url=lambda: "https://x.modal.run")) == (  # type: ignore[arg-type]
        "https://x.modal.run"
    )
    web = SimpleNamespace(get_web_url=lambda: "https://w.modal.run")
    assert endpoint_url(SimpleNamespace(web=web)) == "https://w.modal.run"  # type: ignore[arg-type]
    assert endpoint_url(SimpleNamespace()) is None  # type: ignore[arg-type]


def test_scaling_modal_would_refuse_is_a_clear_error_before_modal_is_asked(
    tmp_path: Path,
) -> None:
    env = {
        **_no_modal_credentials(tmp_path),
        "PROMPTWIRE_MODAL_EXLLAMA__MIN_CONTAINERS": "2",
        "PROMPTWIRE_MODAL_EXLLAMA__MAX_CONTAINERS": "1",
    }
    result = run_cli("deploy", "modal_exllama", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "min_containers (2) is larger than max_containers (1)" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "PROMPTWIRE_MODAL_DUMMY__BUFFER_CONTAINERS",
            "1",
            "buffer_containers (1) leaves no room under max_containers (1)",
        ),
        ("PROMPTWIRE_MODAL_DUMMY__REGION", "Europe", "'Europe' is not a Modal region name"),
        ("PROMPTWIRE_MODAL_DUMMY__SCALEDOWN_WINDOW", "7200", "scaledown_window"),
        ("PROMPTWIRE_MAX_IN_FLIGHT", "0", "max_in_flight"),
    ],
)
def test_scale_out_and_limits_modal_could_not_use_are_refused_before_deploying(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    env = {**_no_modal_credentials(tmp_path), variable: value}
    result = run_cli("deploy", "modal_dummy", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert "Modal is not set up" not in result.stderr  # refused before Modal was asked


def test_a_setting_modal_refuses_when_the_app_is_defined_is_one_line(tmp_path: Path) -> None:
    env = {**_no_modal_credentials(tmp_path), "PROMPTWIRE_MODAL_EXLLAMA__VOLUME_NAME": "my models!"}
    result = run_cli("deploy", "modal_exllama", env=env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Modal refused") and "Invalid Volume name: 'my models!'" in line
    assert result.stdout == ""


def test_what_modal_prints_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    import modal
    from modal.output import OutputManager
    from promptwire.modal.deploy import progress_on_stderr

    with progress_on_stderr(), modal.enable_output():
        OutputManager.get().print("Building image im-123")
        OutputManager.get().step_completed("App deployed!")
        sys.stdout.write("a build log line\n")  # how Modal writes image build logs
    out, err = capsys.readouterr()
    assert out == ""
    assert "Building image im-123" in err and "App deployed!" in err
    assert "a build log line" in err
    sys.stdout.write("after\n")
    assert capsys.readouterr().out == "after\n"  # stdout is stdout again


def test_deploy_prints_only_the_url_on_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``URL=$(promptwire deploy ...)``: Modal's progress (here a stand-in for its deploy call,
    printing as it does) stays out of the captured URL."""
    import modal.runner
    from modal.output import OutputManager
    from promptwire.cli import _commands as cli
    from promptwire.modal import deploy

    environments = []

    def deploy_app(app: object, environment_name: str | None = None) -> SimpleNamespace:
        environments.append(environment_name)
        OutputManager.get().print("Creating objects...")
        OutputManager.get().step_completed("App deployed in 3.1s! 🎉")
        sys.stdout.write("Building image im-123\n")
        return SimpleNamespace(app_page_url="https://modal.com/apps/ws/main/deployed/x")

    monkeypatch.setattr(modal.runner, "deploy_app", deploy_app)
    monkeypatch.setattr(deploy, "endpoint_url", lambda module: "https://ws--x-web.modal.run")
    cli.deploy("modal_dummy", environment="staging")
    out, err = capsys.readouterr()
    assert out == "https://ws--x-web.modal.run\n"
    assert "Creating objects" in err and "App deployed" in err and "Building image" in err
    assert "export PROMPTWIRE_ENDPOINT_URL=https://ws--x-web.modal.run" in err
    assert environments == ["staging"]


def test_the_download_command_takes_the_modal_environment(tmp_path: Path) -> None:
    result = run_cli(
        "exllama", "download", "--environment", "staging", env=_no_modal_credentials(tmp_path)
    )
    assert result.returncode == 1, result.stderr  # not 2: the option exists
    assert "Traceback" not in result.stderr
    assert "of environment staging" in result.stderr and "modal setup" in result.stderr


def test_the_download_runs_in_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Volumes are per environment: the download must fill the one the deploy reads."""
    from contextlib import contextmanager

    import modal
    from promptwire_modal_exllama import commands

    runs: list[str | None] = []

    @contextmanager
    def run(self: modal.App, *, environment_name: str | None = None) -> Iterator[modal.App]:
        runs.append(environment_name)
        yield self

    monkeypatch.setattr(modal.App, "run", run)
    monkeypatch.setattr(
        modal.Function, "remote", lambda self, *args: {"downloaded": True, "args": args}
    )
    result = commands.run_download("someone/Model-exl2", "6.0bpw", environment="staging")
    assert result["args"] == ("someone/Model-exl2", "6.0bpw", False)
    assert runs == ["staging"]


@pytest.fixture()
def offline_deploy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """``deploy_backend`` with Modal's deploy stood in for: the apps it was given."""
    import modal.runner
    from promptwire.modal import deploy

    deployed: list[object] = []

    def deploy_app(app: object, environment_name: str | None = None) -> SimpleNamespace:
        deployed.append(app)
        return SimpleNamespace(app_page_url="https://modal.com/apps/test")

    monkeypatch.setattr(modal.runner, "deploy_app", deploy_app)
    monkeypatch.setattr(deploy, "endpoint_url", lambda module: "https://test.modal.run")
    yield deployed
    for name in ("promptwire_modal_dummy.modal_app", "promptwire_modal_exllama.modal_app"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("backend", "attribute"), [("modal_dummy", "web"), ("modal_exllama", "Server")]
)
def test_deploy_warm_keeps_containers_running(
    offline_deploy: list[object],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    attribute: str,
) -> None:
    from promptwire.modal.deploy import deploy_backend

    from tests.support.modal_container import definition_value, service_function

    variable = f"PROMPTWIRE_{backend.upper()}__MIN_CONTAINERS"
    monkeypatch.setenv(f"PROMPTWIRE_{backend.upper()}__MAX_CONTAINERS", "4")
    monkeypatch.setenv(variable, "1")  # --warm beats the setting
    deployment = deploy_backend(backend, warm=3)
    assert deployment.url == "https://test.modal.run" and len(offline_deploy) == 1
    module = sys.modules[f"promptwire_{backend}.modal_app"]
    assert module.settings.min_containers == 3
    function, _ = service_function(module, attribute)
    assert definition_value(function, "autoscaler_settings").min_containers == 3
    # ... and the containers read the same (their environment comes from the settings).
    assert any(variable in repr(secret) for secret in function._spec.secrets)
    assert os.environ[variable] == "1"  # the setting itself is left as it was


def test_warm_needs_a_backend_with_min_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    from promptwire.modal import deploy
    from promptwire.plugins import RegisteredBackend
    from promptwire.plugins.backends import Backend
    from pydantic_settings import BaseSettings

    class NoScaling(BaseSettings):
        app_name: str = "x"

    odd = RegisteredBackend(
        Backend(name="odd", settings_class=NoScaling, modal_app="odd.modal_app"),
        plugin=None,  # type: ignore[arg-type]
    )
    monkeypatch.setattr("promptwire.plugins.get_backend", lambda name: odd)
    with pytest.raises(ConfigurationError, match="no min_containers setting"):
        deploy.deploy_backend("odd", warm=1)


def test_warm_beyond_max_containers_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("deploy", "modal_exllama", "--warm", "2", env=_no_modal_credentials(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "min_containers (2) is larger than max_containers (1)" in line
