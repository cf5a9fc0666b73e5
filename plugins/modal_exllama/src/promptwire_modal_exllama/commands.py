"""``promptwire exllama ...``: the backend's own commands (added through ``register_commands``).

``modal`` is imported only inside the commands, so ``promptwire --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from promptwire_modal_exllama.settings import ExllamaSettings

commands = typer.Typer(
    help="The modal_exllama backend: model weights in its Modal Volume.",
    no_args_is_help=True,
)
err = Console(stderr=True)


def _size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def run_download(
    repo: str, revision: str, *, force: bool = False, environment: str | None = None
) -> dict[str, Any]:
    """Run the app's download function on Modal (no GPU), streaming its logs and progress, in
    the Modal ``environment`` (each has its own Volumes: use the one you deploy to)."""
    import modal
    from promptwire.modal.deploy import load_modal_app, modal_errors

    module, app = load_modal_app("promptwire_modal_exllama.modal_app")
    with modal_errors(), modal.enable_output(), app.run(environment_name=environment):
        result: dict[str, Any] = module.download_model.remote(repo, revision, force)
    return result


@commands.command()
def download(
    repo: Annotated[
        str | None,
        typer.Option(help="Hugging Face repo id \\[default: PROMPTWIRE_MODAL_EXLLAMA__HF_REPO]"),
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            help="Branch, tag or commit (EXL2: one branch per bpw) "
            "\\[default: PROMPTWIRE_MODAL_EXLLAMA__HF_REVISION]"
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if present")] = False,
    environment: Annotated[
        str | None,
        typer.Option(
            help="Modal environment, as for `promptwire deploy` (each has its own Volumes) "
            "\\[default: your Modal profile's]"
        ),
    ] = None,
) -> None:
    """Download a model into the backend's Modal Volume, with progress, ahead of the first
    cold start. Runs on Modal without a GPU; the weights stay in the Volume."""
    settings = ExllamaSettings()
    repo = repo or settings.hf_repo
    revision = revision or settings.hf_revision
    err.print(
        f"promptwire: downloading [bold]{repo}@{revision}[/] into Modal volume "
        f"[bold]{settings.volume_name}[/]"
        + (f" of environment [bold]{escape(environment)}[/]" if environment else ""),
        highlight=False,
    )
    result = run_download(repo, revision, force=force, environment=environment)
    state = "downloaded" if result.get("downloaded") else "already in the volume"
    err.print(
        f"promptwire: {repo}@{revision} {state}: {result.get('files', 0)} files, "
        f"{_size(int(result.get('bytes', 0)))} at {result.get('path')}",
        highlight=False,
    )
    if (repo, revision) != (settings.hf_repo, settings.hf_revision):
        err.print(
            "To serve it, deploy with PROMPTWIRE_MODAL_EXLLAMA__HF_REPO="
            f"{repo} and PROMPTWIRE_MODAL_EXLLAMA__HF_REVISION={revision}",
            highlight=False,
        )
