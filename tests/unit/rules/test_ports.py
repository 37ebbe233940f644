"""transparentPorts parsing and the PortSet the firewall generator reads."""

from __future__ import annotations

import pytest

from rules.ports import PortSet, parse_transparent_ports


def test_default_spelling() -> None:
    ports = parse_transparent_ports("80,443")
    assert 80 in ports and 443 in ports
    assert 8080 not in ports and 0 not in ports
    assert ports.ranges() == [(80, 80), (443, 443)]
    assert not ports.is_all and not ports.is_empty
    assert str(ports) == "80,443"


def test_star_is_every_port() -> None:
    ports = parse_transparent_ports(" * ")
    assert ports.is_all
    assert 1 in ports and 65535 in ports and 22 in ports
    assert ports.ranges() == [(1, 65535)]
    assert str(ports) == "*"


def test_empty_is_no_port() -> None:
    ports = parse_transparent_ports("")
    assert ports.is_empty
    assert 80 not in ports
    assert ports.ranges() == []
    assert parse_transparent_ports("  ").is_empty


def test_ranges_are_merged_and_sorted() -> None:
    ports = parse_transparent_ports("8080-8090, 443,80, 8085-8100,444")
    assert ports.ranges() == [(80, 80), (443, 444), (8080, 8100)]
    assert 8095 in ports and 8101 not in ports and 442 not in ports
    assert str(ports) == "80,443-444,8080-8100"


def test_full_range_is_all() -> None:
    assert parse_transparent_ports("1-65535").is_all


def test_contains_rejects_non_ports() -> None:
    ports = PortSet.all()
    assert "80" not in ports
    assert True not in ports
    assert None not in ports


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("80,,443", "empty entry"),
        ("80,", "empty entry"),
        ("0", "port 0 in '0' out of range (1-65535)"),
        ("65536", "out of range"),
        ("http", "'http' is not a port number or a range a-b"),
        ("80;443", "is not a port number"),
        ("443-80", "range '443-80' is reversed"),
        ("1-2-3", "is not a port number"),
        ("*,80", "'*' must be the whole value"),
        ("+80", "is not a port number"),
        ("123456", "is not a port number"),
        ("-80", "is not a port number"),
    ],
)
def test_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_transparent_ports(text)
    assert message in str(info.value)


def test_not_a_string() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_transparent_ports(80)  # type: ignore[arg-type]
