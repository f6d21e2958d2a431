"""What the sweep scripts share: a logger that keeps records in memory, list arguments, the JSON
rows of a resumable sweep, and the commit a row was measured at."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from revrnn_cli.training.metrics import MetricsLogger

ROOT = Path(__file__).resolve().parents[1]


class Recorder(MetricsLogger):
    """A logger that writes nowhere and keeps the records of one event (``train``, ``valid``)."""

    def __init__(self, event: str) -> None:
        super().__init__(None)
        self.event = event
        self.records: list[dict] = []

    def log(self, record: dict) -> None:
        if record.get("event") == self.event:
            self.records.append(dict(record))


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def load_rows(path: Path) -> list[dict]:
    """The rows of a sweep's JSON-lines file (none if it does not exist yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def git_commit() -> str | None:
    """The commit measured (``+dirty`` with uncommitted changes), or None outside a git checkout."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10)

        out = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
