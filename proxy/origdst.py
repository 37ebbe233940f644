"""Where a redirected connection was going: `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`.

iptables REDIRECT rewrites the destination to our listener; conntrack remembers the original
tuple and these socket options read it back. A connection that was not redirected reports
the listener's own address, which the caller refuses (the proxy is never an open relay).
"""

from __future__ import annotations

import socket
import struct

from pac.addr import socket_ip

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>
_SOCKADDR_IN6_LEN = 28


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The (ip, port) the client originally connected to; raises OSError when unknown.

    On a dual-stack IPv6 listener an IPv4 client appears as an IPv4-mapped address, and
    its NAT entry is an IPv4 one, so the IPv4 option is the one to ask.
    """
    if sock.family == socket.AF_INET6:
        peer = sock.getpeername()[0]
        if not peer.startswith("::ffff:") or "." not in peer:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6_LEN)
            return parse_sockaddr_in6(raw)
    return parse_sockaddr_in(sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16))


def _family(raw: bytes) -> int:
    return struct.unpack_from("=H", raw, 0)[0]  # sa_family_t: host byte order


def parse_sockaddr_in(raw: bytes) -> tuple[str, int]:
    """(ip, port) of a `struct sockaddr_in` as getsockopt returns it; OSError when the
    bytes are not one (short, another family, port 0)."""
    if len(raw) < 8 or _family(raw) != socket.AF_INET:
        raise OSError(f"original destination is not an IPv4 sockaddr ({bytes(raw[:16]).hex()})")
    port = struct.unpack_from("!H", raw, 2)[0]
    if port == 0:
        raise OSError("original destination has port 0")
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


def parse_sockaddr_in6(raw: bytes) -> tuple[str, int]:
    """(ip, port) of a `struct sockaddr_in6` (the address canonical, IPv4-mapped folded);
    OSError when the bytes are not one (short, another family, port 0)."""
    if len(raw) < 24 or _family(raw) != socket.AF_INET6:
        raise OSError(f"original destination is not an IPv6 sockaddr ({bytes(raw[:28]).hex()})")
    port = struct.unpack_from("!H", raw, 2)[0]
    if port == 0:
        raise OSError("original destination has port 0")
    return socket_ip(socket.inet_ntop(socket.AF_INET6, raw[8:24])), port
