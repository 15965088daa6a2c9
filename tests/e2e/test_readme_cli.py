"""The README's first job, run as the README says: submit, work, list, logs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_job_document() -> str:
    """The job.json the README's 'Your first job' section writes with a heredoc."""
    match = re.search(r"cat > job.json <<'JSON'\n(.*?)\nJSON\n", README.read_text(), flags=re.S)
    assert match, "the README no longer has its first-job example"
    return match.group(1)


@pytest.mark.slow
def test_the_readme_first_job_completes_and_runs_its_on_success_job(relay_cli: Any, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text(readme_job_document())
    submitted = relay_cli("submit", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    worked = relay_cli("worker", "--burst")
    assert worked.returncode == 0, worked.stderr
    jobs = relay_cli.json("list")
    assert sorted(j["state"] for j in jobs) == ["completed", "completed"]
    assert {j["id"] for j in jobs} > {job_id}
    logs = relay_cli("logs", job_id)
    assert logs.stdout.strip() == "--input /data/file.csv"
