"""proxy.audit: every audit line names a decision, also for a connection never decided."""

from __future__ import annotations

import json
import logging

import pytest

from proxy.audit import ConnectionRecord, emit


def _line(caplog: pytest.LogCaptureFixture, record: ConnectionRecord, json_format: bool) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="airgap.conn"):
        emit(record, json_format)
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "airgap.conn"]
    return logged


@pytest.mark.parametrize("json_format", [True, False])
def test_undecided_connection_is_logged_as_reject(
    caplog: pytest.LogCaptureFixture, json_format: bool
) -> None:
    record = ConnectionRecord("127.0.0.1", 40000)
    record.error = "refused: no original destination (connection was not redirected)"
    line = _line(caplog, record, json_format)
    if json_format:
        assert json.loads(line)["decision"] == "REJECT"
    else:
        assert " decision=REJECT " in line
        assert 'decision=""' not in line


def test_a_decision_made_is_logged_as_made(caplog: pytest.LogCaptureFixture) -> None:
    record = ConnectionRecord("127.0.0.1", 40000, "203.0.113.5", 443, decision="DIRECT")
    assert json.loads(_line(caplog, record, True))["decision"] == "DIRECT"


def test_lines_name_their_path(caplog: pytest.LogCaptureFixture) -> None:
    transparent = json.loads(_line(caplog, ConnectionRecord("127.0.0.1", 1), True))
    assert transparent["path"] == "transparent" and "method" not in transparent
    record = ConnectionRecord("127.0.0.1", 1, path="explicit", method="GET")
    record.host, record.port, record.status = "a.example", 80, 403
    explicit = json.loads(_line(caplog, record, True))
    assert explicit["path"] == "explicit"
    assert (explicit["method"], explicit["host"], explicit["port"], explicit["status"]) == (
        "GET",
        "a.example",
        80,
        403,
    )
