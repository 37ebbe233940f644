"""Hostname canonicalisation: one spelling for every name the policy compares.

A sniffed SNI or Host value comes from the client, so it is untrusted input. The policy only
ever compares canonical names (lower case, no trailing dot, IDNA A-labels, LDH characters,
RFC 1035 lengths); anything that cannot be brought into that form is not a name at all and the
connection is decided on its IP. IP literals are refused too: an address written
into SNI/Host says nothing the original destination IP does not already say, and trusting it
would let a client pick which IP rules apply.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna

#: RFC 1035: 63 octets per label, 255 octets on the wire, i.e. 253 characters in text form.
MAX_LABEL = 63
MAX_NAME = 253

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# WHATWG URL rule: a last label that is a number (decimal or 0x-hex) makes the host an IPv4
# address in browsers (`0x7f000001`, `1.2.3`); such a "name" is an IP in disguise.
NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


def is_ip_literal(text: str) -> bool:
    """True for an IPv4 or IPv6 address, bracketed or not (zone ids included)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def canonical_label(label: str) -> str | None:
    """One label in canonical form, or None when it is not a valid LDH/IDNA label.

    Used for exclude and no_proxy entries too, so patterns and sniffed names are spelled
    the same way before they are compared.
    """
    if not label:
        return None
    if label.isascii():
        label = label.lower()
        if label.startswith("xn--") and not _valid_a_label(label):
            return None
    else:
        try:
            label = idna.encode(label, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
        if "." in label:  # UTS46 mapped an ideographic full stop: not one label
            return None
    if len(label) > MAX_LABEL or not _LDH_LABEL.fullmatch(label):
        return None
    return label


@functools.lru_cache(maxsize=4096)  # pure, and called once per sniffed connection
def canonical_hostname(raw: str | bytes) -> str | None:
    """The canonical form of a sniffed name, or None when it is unusable.

    Bytes (SNI, Host header) must be ASCII: RFC 6066 carries A-labels only, and a client
    that sends raw UTF-8 is not trusted to have meant any particular name. Text may hold
    U-labels (config files, `explain`); they are converted with UTS 46 mapping. Returns
    None for empty names, IP literals, ports, underscores, bad A-labels, labels over 63 or
    names over 253 characters, and names whose last label is numeric.
    """
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(raw, str):
        return None
    name = raw[:-1] if raw.endswith(".") else raw
    if not name or len(name) > 4 * MAX_NAME or is_ip_literal(name):
        return None
    labels = []
    for part in name.split("."):
        label = canonical_label(part)
        if label is None:
            return None
        labels.append(label)
    result = ".".join(labels)
    if len(result) > MAX_NAME or NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    return result


def _valid_a_label(label: str) -> bool:
    """An `xn--` label must decode, and re-encode to itself (no alternative spellings)."""
    try:
        return idna.encode(idna.decode(label)).decode("ascii") == label
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
