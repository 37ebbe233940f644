"""Where a redirected connection was going: `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`.

iptables REDIRECT rewrites the destination to our listener; conntrack remembers the original
tuple and these socket options read it back. A connection that was not redirected reports
the listener's own address, which the caller refuses (the proxy is never an open relay).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP6T_SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv6/ip6_tables.h>
_SOCKADDR_IN6_LEN = 28


def canonical_ip(ip: str) -> str:
    """An address in its canonical text, IPv4-mapped IPv6 folded to IPv4 (design.md)."""
    if ":" not in ip:
        return ip  # the kernel's IPv4 text is canonical already
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """The (ip, port) the client originally connected to; raises OSError when unknown.

    On a dual-stack IPv6 listener an IPv4 client appears as an IPv4-mapped address, and
    its NAT entry is an IPv4 one, so the IPv4 option is the one to ask.
    """
    if sock.family == socket.AF_INET6:
        peer = sock.getpeername()[0]
        if not peer.startswith("::ffff:") or "." not in peer:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, _SOCKADDR_IN6_LEN)
            port = struct.unpack_from("!H", raw, 2)[0]
            ip = socket.inet_ntop(socket.AF_INET6, raw[8:24])
            return canonical_ip(ip), port
    raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    ip = socket.inet_ntop(socket.AF_INET, raw[4:8])
    return ip, port
