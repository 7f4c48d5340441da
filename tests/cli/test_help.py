"""Every command and subcommand of `metacluster` answers `--help` (walked from the click group).

Plugin commands (entry points: `serve`, `keys`) and nested groups (`remote`, `data`, `keys`)
are walked too, so a new command cannot ship a `--help` that crashes.
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from metacluster.cli import cli


def _walk(group: click.Group, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    ctx = click.Context(group, info_name=" ".join(path) or "metacluster")
    found = [path]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"{' '.join((*path, name))} is listed but does not load"
        if isinstance(command, click.Group):
            found += _walk(command, (*path, name))
        else:
            found.append((*path, name))
    return found


COMMANDS = _walk(cli, ())


def test_the_walk_reaches_plugins_and_nested_groups() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for expected in ("compress", "serve", "keys", "keys create", "remote", "remote submit", "data"):
        assert expected in names, sorted(names)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "metacluster")
def test_help_runs(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: "), result.output
    assert "error:" not in result.output
