"""proxy.audit: every audit line names a decision, also for a connection never decided."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from proxy import audit
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


def test_shadow_fields_appear_only_where_the_shadow_disagreed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = ConnectionRecord("127.0.0.1", 40000, "203.0.113.5", 443, decision="DIRECT")
    assert "shadow_decision" not in json.loads(_line(caplog, record, True))
    record.shadow_decision, record.shadow_reason = "REJECT", "no proxy configured"
    data = json.loads(_line(caplog, record, True))
    assert data["shadow_decision"] == "REJECT" and data["shadow_reason"] == "no proxy configured"


def test_the_audit_file_gets_json_lines_also_with_text_logs_and_survives_a_rotation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    audit.open_audit_file(str(path))
    try:
        record = ConnectionRecord("127.0.0.1", 40000, "203.0.113.5", 443, decision="DIRECT")
        record.reason = "line\nbreak"  # hostile text stays inside its one line
        _line(caplog, record, False)
        (tmp_path / "audit.jsonl").rename(tmp_path / "audit.jsonl.1")
        audit.reopen_audit_file()
        _line(caplog, record, False)
    finally:
        audit.open_audit_file(None)
    for name in ("audit.jsonl", "audit.jsonl.1"):
        (line,) = (tmp_path / name).read_text().splitlines()
        assert json.loads(line)["reason"] == "line\nbreak"
