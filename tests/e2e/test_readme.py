"""The README's examples run (or load) as written."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from eventcenter.center.app import EventCenter
from eventcenter.center.settings import CenterSettings
from eventcenter.healing.escalation import CallbackSink

README = Path(__file__).parents[2] / "README.md"


def test_the_library_example_runs_and_records_a_decision(tmp_path: Path) -> None:
    section = README.read_text().split("## Use it as a library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README has a python example"
    script = tmp_path / "example.py"
    script.write_text(match.group(1))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "order {'order': 42}" in result.stdout
    assert "('deployment.seen', 'api deployed')" in result.stdout
    assert (tmp_path / "data" / "center.db").is_file()


def test_the_self_healing_config_example_is_valid_settings(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## Self-healing") : text.index("### Circuit breakers\n")]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "the self-healing section has a TOML example"
    data = tomllib.loads(match.group(1))
    settings = CenterSettings(data_dir=tmp_path, **data)

    async def page(notice: Any) -> None:
        return None

    center = EventCenter(settings, escalation_sinks=[CallbackSink("acme-pager", page)])
    try:
        assert center.healing.escalator.sinks_for("acme")[0].name == "acme-pager"
        assert [s.name for s in center.healing.escalator.sinks_for("other")] == ["log", "ops"]
        assert center.healing.monitor.names == ["cache"]
    finally:
        center.close()
