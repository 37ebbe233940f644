"""proxy.shadow: what counts as a disagreement, and that only that is noted and counted."""

from __future__ import annotations

from pac.routes import DIRECT, Route
from proxy import shadow
from proxy.audit import ConnectionRecord
from rules.model import Decision

P1, P2 = Route("PROXY", "p1.example", 3128), Route("PROXY", "p2.example", 3128)


def d(action: str, *routes: Route, reason: str = "r") -> Decision:
    return Decision(action, routes, reason, "http://x:80", "x")  # type: ignore[arg-type]


def test_disagreement_is_another_action_or_another_route() -> None:
    assert not shadow.disagree(d("DIRECT", DIRECT), d("DIRECT", DIRECT, reason="other words"))
    assert not shadow.disagree(d("REJECT"), d("REJECT", reason="another rule"))
    assert shadow.disagree(d("DIRECT", DIRECT), d("REJECT"))
    assert shadow.disagree(d("PROXY", P1), d("PROXY", P2))


def test_only_a_disagreement_is_noted_and_counted() -> None:
    counted: list[tuple[str, str]] = []
    shadow.on_disagreement.append(lambda e, s: counted.append((e, s)))
    try:
        record = ConnectionRecord("10.0.0.1", 1)
        shadow.compare(record, d("DIRECT", DIRECT), d("DIRECT", DIRECT))
        assert record.shadow_decision is None and counted == []
        shadow.compare(record, d("DIRECT", DIRECT), d("REJECT", reason="blocked"))
        assert (record.shadow_decision, record.shadow_reason) == ("REJECT", "blocked")
        assert counted == [("DIRECT", "REJECT")]
    finally:
        shadow.on_disagreement.clear()
