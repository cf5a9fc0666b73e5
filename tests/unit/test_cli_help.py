"""The CLI's help says where an option's value comes from when it is not given."""

from __future__ import annotations

import pytest
from promptwire.cli import app
from typer.testing import CliRunner


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("invoke", "[default: PROMPTWIRE_ENDPOINT_URL]"),
        ("invoke", "[default: PROMPTWIRE_TIMEOUT, else 600]"),
        ("serve", "[default: PROMPTWIRE_BACKEND or modal_dummy]"),
        ("status", "[default: PROMPTWIRE_API_KEY]"),
    ],
)
def test_defaults_are_shown_not_eaten_as_markup(command: str, shown: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert shown in " ".join(result.stdout.split())
