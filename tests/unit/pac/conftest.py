"""Shared fixtures for the PAC engine tests: the corpus, UTC, and a script evaluator."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PAC_CORPUS

CASES: list[dict[str, Any]] = json.loads((PAC_CORPUS / "cases.json").read_text())["cases"]


@pytest.fixture(scope="session", autouse=True)
def utc() -> Iterator[None]:
    """The corpus fixes the local time zone to UTC; engines read the process's zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def corpus_script(case: dict[str, Any]) -> str:
    return (PAC_CORPUS / case["pac"]).read_text(encoding="utf-8")
