"""The README's promises that can be read off the code: its configuration table is every setting."""

from __future__ import annotations

import re
from pathlib import Path

from pacifica.dispatcher.config import settings_table

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_settings() -> dict[str, tuple[str, str]]:
    """(default, meaning) of every row of the README's configuration table, by variable."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z_]+)` \| (.*?) \| (.*) \|$", section, flags=re.M)
    return {name: (default.strip("`"), meaning) for name, default, meaning in rows}


def test_the_configuration_table_lists_every_setting_with_its_default_and_meaning() -> None:
    expected = {name: (default or "—", doc) for name, default, doc in settings_table()}
    assert readme_settings() == expected
