"""pac/target.py's quick checks against the definitions they stand for.

`pac-eval` parses tens of thousands of targets per batch, so the name check is one regular
expression for the whole name, and a host without ':' that is not made of digits and dots is
known to be no IP literal without asking `ipaddress`. Both must answer exactly as the plain
definitions do: every label LDH within RFC 1035 lengths, and whatever `ipaddress` says.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from pac import addr
from pac.target import TargetError, canonical_ip, canonical_name

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def _is_name_by_labels(name: str) -> bool:
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _ip_by_ipaddress(text: str) -> str | None:
    if "%" in text:
        return None
    try:
        return addr.canonical_ip(text)
    except ValueError:
        return None


_pieces = st.one_of(
    st.sampled_from(["a", "z9", "-", ".", "..", "x" * 63, "y" * 64, "0x1f", "12", "_", "A"]),
    st.sampled_from(["1.2.3.4", "255.255.255.255", "01.2.3.4", "256.1.1.1", "1.2.3", "::1"]),
    st.sampled_from(["\u0661", "\u00b2", "\uff11", "::ffff:10.0.0.1", "%", "1.2.3.4."]),
    st.text(alphabet="0123456789.:abcdef-", max_size=8),
)
_hosts = st.one_of(st.lists(_pieces, max_size=12).map("".join), st.text(max_size=40))


@given(_hosts)
@example("a." * 126 + "a")  # 253 characters: the longest name
@example("a." * 126 + "ab")  # 254
@example("1.2.3.4")
@example("\u0661.\u0662.\u0663.\u0664")  # Arabic-Indic digits are no IPv4 literal
def test_the_quick_checks_answer_as_the_definitions(text: str) -> None:
    assert canonical_ip(text) == _ip_by_ipaddress(text)
    lowered = text[:-1] if text.endswith(".") else text
    if not lowered or not lowered.isascii() or canonical_ip(text) is not None:
        return
    lowered = lowered.lower()
    numeric_end = re.fullmatch(r"(?:0x[0-9a-f]*|[0-9]+)", lowered.rpartition(".")[2])
    try:
        assert canonical_name(text) == lowered
        assert _is_name_by_labels(lowered) and not numeric_end
    except TargetError:
        assert not _is_name_by_labels(lowered) or numeric_end
