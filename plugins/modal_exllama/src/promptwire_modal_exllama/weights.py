"""Model weights in a directory tree: ``<root>/<repo id>/<revision>``, downloaded once.

Used inside Modal containers (the download function, and a cold start that finds the Volume
empty); ``huggingface_hub`` is imported only when something is downloaded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Written last, so a directory with it holds a whole download (and says which commit).
COMPLETE_MARKER = ".promptwire-download.json"

#: Files an ExLlamaV2 model directory needs; the rest of a repository (READMEs, measurement
#: files, other formats) is skipped.
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.jinja")


class WeightsError(RuntimeError):
    """The weights could not be found or downloaded."""


def model_path(root: Path, repo_id: str, revision: str) -> Path:
    """Where ``repo_id`` at ``revision`` lives under ``root``; refuses ids that would escape it."""
    parts = [*repo_id.split("/"), revision]
    if any(part in ("", ".", "..") or "\\" in part for part in parts) or repo_id.count("/") != 1:
        raise WeightsError(f"not a Hugging Face model id and revision: {repo_id!r} @ {revision!r}")
    return root.joinpath(*parts)


def is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and (path / "config.json").is_file()


def download(
    repo_id: str,
    revision: str,
    root: Path,
    *,
    token: str | None = None,
    force: bool = False,
    snapshot_download: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Download ``repo_id@revision`` under ``root`` unless it is already there.

    Returns a summary (path, files, bytes, seconds, whether anything was downloaded).
    """
    path = model_path(root, repo_id, revision)
    if is_complete(path) and not force:
        return _summary(path, downloaded=False, seconds=0.0)
    fetch = snapshot_download or _hub_snapshot_download()
    started = time.monotonic()
    path.mkdir(parents=True, exist_ok=True)
    (path / COMPLETE_MARKER).unlink(missing_ok=True)
    try:
        fetch(
            repo_id=repo_id,
            revision=revision,
            local_dir=str(path),
            token=token or None,
            allow_patterns=list(MODEL_FILE_PATTERNS),
        )
    except Exception as exc:
        hint = (
            " (a gated or private repository needs a Hugging Face token: set "
            "PROMPTWIRE_MODAL_EXLLAMA__HF_TOKEN_SECRET to a Modal Secret holding HF_TOKEN)"
            if token is None
            else ""
        )
        raise WeightsError(
            f"downloading {repo_id}@{revision} failed: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    if not (path / "config.json").is_file():
        raise WeightsError(f"{repo_id}@{revision} has no config.json: is it a model repository?")
    marker = {"repo_id": repo_id, "revision": revision, "downloaded_at": time.time()}
    (path / COMPLETE_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return _summary(path, downloaded=True, seconds=time.monotonic() - started)


def _hub_snapshot_download() -> Callable[..., Any]:
    from huggingface_hub import snapshot_download

    return snapshot_download


def _summary(path: Path, *, downloaded: bool, seconds: float) -> dict[str, Any]:
    files = [
        p for p in path.rglob("*") if p.is_file() and ".cache" not in p.relative_to(path).parts
    ]
    return {
        "path": str(path),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "downloaded": downloaded,
        "seconds": round(seconds, 1),
    }
