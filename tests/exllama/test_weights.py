"""Weights in the Volume: paths, the completeness marker, and download errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from promptwire_modal_exllama.weights import (
    COMPLETE_MARKER,
    WeightsError,
    download,
    is_complete,
    model_path,
)


def _writer(files: dict[str, bytes]) -> Any:
    def snapshot_download(**kwargs: Any) -> str:
        for name, content in files.items():
            (Path(kwargs["local_dir"]) / name).write_bytes(content)
        return str(kwargs["local_dir"])

    return snapshot_download


def test_a_model_lives_under_its_repo_id_and_revision(tmp_path: Path) -> None:
    assert model_path(tmp_path, "org/Model-exl2", "4.0bpw") == tmp_path / "org/Model-exl2/4.0bpw"


@pytest.mark.parametrize(
    ("repo", "revision"),
    [("../etc", "main"), ("org/..", "main"), ("org/m", ".."), ("no-slash", "main"), ("a/b/c", "x")],
)
def test_ids_that_would_leave_the_volume_are_refused(
    tmp_path: Path, repo: str, revision: str
) -> None:
    with pytest.raises(WeightsError):
        model_path(tmp_path, repo, revision)


def test_the_marker_is_written_last_and_makes_the_download_idempotent(tmp_path: Path) -> None:
    fetch = _writer({"config.json": b"{}", "model.safetensors": b"123"})
    first = download("org/m", "main", tmp_path, snapshot_download=fetch)
    path = tmp_path / "org/m/main"
    assert first["downloaded"] and is_complete(path) and (path / COMPLETE_MARKER).is_file()
    assert first["bytes"] > 5
    second = download("org/m", "main", tmp_path, snapshot_download=_writer({}))
    assert not second["downloaded"]
    forced = download("org/m", "main", tmp_path, force=True, snapshot_download=fetch)
    assert forced["downloaded"]


def test_a_repository_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"no config\.json"):
        download("org/m", "main", tmp_path, snapshot_download=_writer({"README.md": b"hi"}))
    assert not is_complete(tmp_path / "org/m/main")


def test_a_failed_download_says_why_and_hints_at_the_token(tmp_path: Path) -> None:
    def refuse(**kwargs: Any) -> str:
        raise PermissionError("401 Client Error: gated repo")

    with pytest.raises(WeightsError) as failed:
        download("org/gated", "main", tmp_path, snapshot_download=refuse)
    assert "401" in str(failed.value) and "HF_TOKEN_SECRET" in str(failed.value)
    with pytest.raises(WeightsError) as with_token:
        download("org/gated", "main", tmp_path, token="t", snapshot_download=refuse)
    assert "HF_TOKEN_SECRET" not in str(with_token.value)
