"""Suite-wide rules: in CI a skipped test is a failure (a skip there hides a missing part)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
# The PAC conformance sample is part of the repository, so a fresh clone tests itself.
PAC_CORPUS = REPO / "tests" / "data" / "pac-corpus"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests (tests/unit/**/test_*_properties.py): bounded so the whole suite stays fast
# on every submission; derandomized in CI so a failure there reproduces exactly. Run a longer
# local campaign with HYPOTHESIS_PROFILE=fuzz.
settings.register_profile(
    "default",
    max_examples=200,
    deadline=2000,  # ms per example: generous for a loaded 2-core box, still catches a hang
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=IN_CI,
    print_blob=True,
)
settings.register_profile("fuzz", parent=settings.get_profile("default"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if IN_CI and reporter is not None and reporter.stats.get("skipped"):
        reporter.write_line("CI: skipped tests count as failures here", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
