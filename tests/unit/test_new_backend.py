"""``promptwire new-backend NAME`` writes a plugin project from the templates shipped in the
package; tests/packaging/test_new_backend_project.py installs one and runs its tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from promptwire import ConfigurationError
from promptwire.cli import app
from promptwire.cli._new_backend import project_names, write_project
from typer.testing import CliRunner

FILES = {
    "README.md",
    "pyproject.toml",
    "src/promptwire_pig_latin/__init__.py",
    "src/promptwire_pig_latin/engine.py",
    "src/promptwire_pig_latin/plugin.py",
    "src/promptwire_pig_latin/py.typed",
    "src/promptwire_pig_latin/settings.py",
    "tests/test_pig_latin.py",
}


def test_the_project_has_every_file_filled_in(tmp_path: Path) -> None:
    project = write_project("pig_latin", tmp_path)
    assert project == tmp_path / "promptwire-pig-latin"
    written = {str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()}
    assert written == FILES
    pyproject = (project / "pyproject.toml").read_text()
    assert 'name = "promptwire-pig-latin"' in pyproject
    assert (
        '[project.entry-points.promptwire]\npig_latin = "promptwire_pig_latin.plugin"' in pyproject
    )
    assert '"promptwire[server]>=0.1,<0.2"' in pyproject
    engine = (project / "src/promptwire_pig_latin/engine.py").read_text()
    assert "class PigLatinEngine(Engine):" in engine
    settings = (project / "src/promptwire_pig_latin/settings.py").read_text()
    assert "PROMPTWIRE_PIG_LATIN__<FIELD>" in settings
    for path in project.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # valid Python, every placeholder filled


def test_nothing_is_overwritten_and_bad_names_are_refused(tmp_path: Path) -> None:
    project = write_project("mine", tmp_path)
    (project / "README.md").write_text("the author's own")
    with pytest.raises(ConfigurationError, match="exists already"):
        write_project("mine", tmp_path)
    assert (project / "README.md").read_text() == "the author's own"
    for bad in ("Mine", "my-backend", "1st", ""):
        with pytest.raises(ConfigurationError, match="invalid backend name"):
            project_names(bad)


def test_the_command_writes_it_where_asked(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["new-backend", "pig_latin", "--directory", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "pip install -e '.[test]'" in result.output
    assert (tmp_path / "promptwire-pig-latin" / "tests" / "test_pig_latin.py").is_file()
