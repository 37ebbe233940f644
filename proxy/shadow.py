"""Shadow evaluation: what a second policy would have decided, for rolling a policy out.

`--shadow-config` names a second policy file, decided beside the enforced one for every
connection and never used for a route (a report-only switch on the enforced policy would
open the air gap; this cannot). Where the two disagree, the connection's audit line carries
`shadow_decision` and `shadow_reason`, and every `on_disagreement` hook is called with the
two actions (a small fixed set: fit for a counter's labels).

Two decisions disagree when their actions differ, or when both route and the routes differ
(the same PROXY verdict through another proxy is a different outcome for the operator).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from proxy.audit import ConnectionRecord
from rules.model import Decision

log = logging.getLogger("airgap.proxy")

#: Called with (enforced action, shadow action) for every disagreement.
on_disagreement: list[Callable[[str, str], None]] = []


def disagree(enforced: Decision, shadow: Decision) -> bool:
    if enforced.action != shadow.action:
        return True
    return enforced.action != "REJECT" and enforced.routes != shadow.routes


def compare(record: ConnectionRecord, enforced: Decision, shadow: Decision) -> None:
    """Note on `record` what the shadow decided, when it is not what was enforced."""
    if not disagree(enforced, shadow):
        return
    record.shadow_decision = shadow.action
    record.shadow_reason = shadow.reason
    for hook in on_disagreement:
        try:
            hook(enforced.action, shadow.action)
        except Exception:
            log.exception("shadow disagreement hook failed")
