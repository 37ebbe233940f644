"""Host, port and address text: one spelling of each rule for the whole program.

`pac/` is the lowest layer (`rules/` and `proxy/` import it, it imports neither), so these
helpers live here where every layer may use them. They raise `ValueError` with a short
reason; each caller wraps it in its own error type and wording (an argparse error, a config
error, a dropped PAC entry).

Why one module: the same rules written several times drift. `str.isdigit()` is True for
"١٥٠٠١" (Arabic-Indic digits) and "²", which `int()` then reads as a number, so a check
written with it accepted `--listen 127.0.0.1:١٥٠٠١` as port 15001 where another refused it.
"""

from __future__ import annotations

import ipaddress
import re

_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only


def parse_port(text: str) -> int:
    """A TCP port written in ASCII digits, 1-65535; ValueError otherwise."""
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise ValueError("port must be 1-65535")
    return int(text)


def split_hostport(text: str) -> tuple[str, str]:
    """`host:port` or `[v6]:port` -> (host, port text), the brackets removed.

    Only the shape is checked here (the port text is the caller's to parse, often with
    `parse_port`); an IPv6 address without brackets is refused, as its last group would be
    read as the port.
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError("expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError("expected HOST:PORT")
        if ":" in host:
            raise ValueError("write IPv6 addresses as [ADDR]:PORT")
    if not host:
        raise ValueError("missing host")
    return host, port_text


def parse_hostport(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError with the reason."""
    host, port_text = split_hostport(text)
    return host, parse_port(port_text)


def unmap(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it carries.

    A dual-stack socket reports IPv4 peers that way; the policy must see one spelling of
    one destination, or an IPv4 rule would not match its mapped twin.
    """
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def canonical_ip(text: str) -> str:
    """An IP literal in its canonical text, IPv4-mapped folded to IPv4; ValueError if none.

    A scope id (`fe80::1%eth0`) is dropped: the kernel reports one on link-local peers,
    and the policy decides on the address.
    """
    return str(unmap(ipaddress.ip_address(text.split("%", 1)[0])))


def socket_ip(text: str) -> str:
    """`canonical_ip` of an address a socket reported (`getpeername`, `SO_ORIGINAL_DST`).

    The kernel's IPv4 text is canonical already, so it is returned as it is: this runs for
    every connection, and parsing it would be the only cost.
    """
    return canonical_ip(text) if ":" in text else text


def format_hostport(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets (`[::1]:3128`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
