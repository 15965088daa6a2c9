"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [block] = python_blocks()
    monkeypatch.chdir(tmp_path)  # Relay() uses sqlite:///relay.db in the current directory
    monkeypatch.delenv("RELAY_DATABASE_URL", raising=False)
    monkeypatch.delenv("RELAY_DB_DSN", raising=False)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(block, str(README), "exec"), namespace)
    relay = namespace["relay"]
    try:
        assert capsys.readouterr().out.strip().endswith("charged 42 1999 cents")
        assert (tmp_path / "relay.db").exists()
    finally:
        relay.close()  # type: ignore[attr-defined]
