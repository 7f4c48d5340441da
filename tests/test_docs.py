"""The docs stay true: README's configuration table is generated from the settings object,
every setting explains itself, and the docs the README names exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from core.settings import Settings, reference_markdown

REPO = Path(__file__).resolve().parents[1]


def _script() -> object:
    spec = importlib.util.spec_from_file_location(
        "settings_reference", REPO / "scripts" / "settings_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    readme = (REPO / "README.md").read_text()
    assert _script().render(readme) == readme, (  # type: ignore[attr-defined]
        "README.md's configuration table is stale: run python scripts/settings_reference.py"
    )
    table = reference_markdown()
    for name in Settings.model_fields:
        assert f"`METACLUSTER_{name.upper()}`" in table


def test_every_setting_has_a_description() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert missing == []


def test_the_readme_keeps_its_two_commands_first_and_names_existing_docs() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert [line.split()[:2] for line in first_block.strip().splitlines()[1:]] == [
        ["make", "run"],
        ["make", "test"],
    ]
    for doc in set(re.findall(r"`(docs/[a-z_]+\.md)`", readme)):
        assert (REPO / doc).is_file(), doc
    for doc in ("docs/api.md", "docs/pipelines.md", "docs/format.md"):
        assert doc in readme
