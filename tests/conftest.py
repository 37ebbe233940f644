"""Suite-wide rules: in CI a skipped test is a failure (a skip there hides a missing part)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PAC_CORPUS = SHARED / "pac-corpus"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if IN_CI and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line("CI: skipped tests count as failures here", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
