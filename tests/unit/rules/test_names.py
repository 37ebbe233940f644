"""canonical_hostname: the one spelling of every name the policy compares."""

from __future__ import annotations

import pytest

from rules.names import canonical_hostname, canonical_label


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        (b"api.example.com", "api.example.com"),
        ("localhost", "localhost"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("ａｂｃ.com", "abc.com"),  # UTS 46 maps full-width letters
        ("a-b.example", "a-b.example"),
        ("1password.com", "1password.com"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_canonical_names(raw: str | bytes, expected: str) -> None:
    assert canonical_hostname(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "example..com",
        ".example.com",
        "example.com..",
        "exa mple.com",
        "a_b.example.com",  # RFC 1035 characters: no underscore
        "-a.example.com",
        "a-.example.com",
        "example.com:443",
        "a" * 64 + ".com",  # label over 63
        ".".join(["a" * 63] * 4),  # 255 characters, over 253
        "xn--zz.example",  # invalid A-label
        "1.2.3.4",
        "1.2.3.4.",
        "::1",
        "[2001:db8::1]",
        "1.2.3",  # numeric last label: an IPv4 address in disguise
        "0x7f000001",
        "foo.123",
        "１.２.３.４",  # full-width digits map to an IPv4 literal
        b"caf\xc3\xa9.example",  # raw UTF-8 bytes in SNI/Host are not trusted
        b"\xff",
        "exa\x00mple.com",
    ],
)
def test_unusable_names_are_none(raw: str | bytes) -> None:
    assert canonical_hostname(raw) is None


def test_max_length_name_is_kept() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters
    assert len(name) == 253
    assert canonical_hostname(name) == name
    assert canonical_hostname(name + ".") == name


def test_canonical_label() -> None:
    assert canonical_label("EXAMPLE") == "example"
    assert canonical_label("") is None
    assert canonical_label("a.b") is None
    assert canonical_label("café") == "xn--caf-dma"
