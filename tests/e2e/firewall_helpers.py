"""Namespaces, processes and probes for the firewall end-to-end tests.

The rules under test are installed in a namespace of their own (`APP`, the "sidecar"
namespace where the proxy and the application run), never in the namespace tests/run.sh
made, where other end-to-end tests keep their own rules. `NET` plays the internet: origin
servers, DNS servers and an upstream proxy on addresses from the documentation ranges.
`PEER` is a container behind `APP` (for `--from-interface`). Nothing leaves these
namespaces: they exist inside the private one of tests/run.sh.

    PEER eth0 198.51.100.6/30 ---- fwpeer0 198.51.100.5/30  APP  eth0 198.51.100.2/30 ---- NET
              2001:db8:2::2/64      2001:db8:2::1/64              2001:db8:1::2/64     eth0 .1

Run as a module, this file is also the probes run inside the namespaces as other uids:
`serve` (the origins), `tcp`, `udp`, `icmp`, `hold` (a flow kept open across a change),
`tunnel` (HTTP CONNECT through an upstream proxy at each of several addresses).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

APP, NET, PEER = "agfw-app", "agfw-net", "agfw-peer"
PEER_IF = "fwpeer0"

APP_V4, NET_V4 = "198.51.100.2", "198.51.100.1"
APP_V6, NET_V6 = "2001:db8:1::2", "2001:db8:1::1"
APP_PEER_V4, PEER_V4 = "198.51.100.5", "198.51.100.6"
APP_PEER_V6, PEER_V6 = "2001:db8:2::1", "2001:db8:2::2"

ORIGIN_V4, ORIGIN_V6 = "203.0.113.10", "2001:db8::10"
DNS_V4, DNS_V6 = "203.0.113.53", "2001:db8::53"
UPSTREAM_V4, UPSTREAM_V6 = "198.51.100.77", "2001:db8::77"
UPSTREAM_PORT = 3128
ORIGIN_TCP_PORTS = (80, 443, 8080)
UDP_PORT = 9999

PROXY_UID = PROXY_GID = 10001
CLIENT_UID = CLIENT_GID = 10002
#: An upstream proxy running in APP itself (exempted with --exclude-uid).
LOCAL_UPSTREAM_UID = 10003
MARK = 0x4147

#: The proxy's policy: everything in the test ranges is DIRECT, the rest is rejected.
PROXY_CONFIG = {
    "configurationFileVersion": 2,
    "containersProxy": {
        "mode": "manual",
        "http": "",
        "https": "",
        "exclude": ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"],
        "pac": "",
        "transparentPorts": "80,443",
    },
}


# ---------------------------------------------------------------- running things


def sh(*cmd: str, check: bool = True, stdin: str | None = None, timeout: float = 60) -> str:
    """Run a command; stdout, or a failure that shows stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, *cmd: str) -> list[str]:
    """A command line that runs `cmd` in network namespace `ns`."""
    return ["ip", "netns", "exec", ns, *cmd]


def _first_closed_ancestor(path: Path) -> Path | None:
    """The first directory above `path` (from /) that other uids cannot enter, if any."""
    for ancestor in reversed(path.parents):
        if ancestor != Path("/") and not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


@functools.cache
def python_readable_by_all() -> list[str]:
    """A prefix that lets other uids run this interpreter on this checkout.

    The interpreter may live under /root (0700) and the checkout under a 0700 temporary
    folder (a fresh CI clone). In a mount namespace of that one process tree, each such
    closed directory is covered by an empty 0755 tmpfs and only the trees needed (the
    interpreter's, the checkout) are bound back; nothing outside that process tree changes.
    """
    needed: dict[Path, set[Path]] = {}
    for path in (Path(sys.base_prefix).resolve(), REPO):
        closed = _first_closed_ancestor(path)
        if closed is not None:
            needed.setdefault(closed, set()).add(closed / path.relative_to(closed).parts[0])
    if not needed:
        return []
    steps = ["set -e"]
    for closed, tops in needed.items():
        hold = tempfile.mkdtemp(prefix="agfw-hold-")
        steps.append(f"mount --bind {shlex.quote(str(closed))} {shlex.quote(hold)}")
        steps.append(f"mount -t tmpfs -o mode=0755 tmpfs {shlex.quote(str(closed))}")
        for top in sorted(tops):
            held = Path(hold) / top.relative_to(closed)
            steps.append(f"mkdir -p {shlex.quote(str(top))}")
            steps.append(f"mount --bind {shlex.quote(str(held))} {shlex.quote(str(top))}")
    steps.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "; ".join(steps), "sh"]


def as_uid(uid: int, gid: int, *cmd: str, caps: Sequence[str] = ()) -> list[str]:
    """`cmd` as uid/gid with no supplementary groups, keeping only `caps` (ambient)."""
    caps_args: list[str] = []
    if caps:
        spec = "-all," + ",".join(f"+{c}" for c in caps)
        caps_args = [f"--inh-caps={spec}", f"--ambient-caps={spec}"]
    return [
        *python_readable_by_all(),
        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *caps_args, "--", *cmd,
    ]  # fmt: skip


def probe(ns: str, *args: str, uid: int | None = None, gid: int | None = None) -> dict:
    """Run one probe of this module in `ns` (as uid, or root) and return its JSON answer."""
    cmd = [sys.executable, "-m", "tests.e2e.firewall_helpers", *args]
    if uid is not None:
        cmd = as_uid(uid, gid if gid is not None else uid, *cmd)
    out = subprocess.run(
        in_ns(ns, *cmd), capture_output=True, text=True, cwd=REPO, timeout=30, check=False
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"probe {args} failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def firewall(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`airgap-proxy iptables ARGS` in namespace `ns`, as root."""
    cmd = in_ns(ns, sys.executable, "-m", "proxy.cli", "iptables", *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"iptables {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def wait_for(predicate, timeout: float, what: str, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------- topology


@functools.cache
def _ensure_netns_dir() -> None:
    """`ip netns` keeps its handles in /run/netns: a tmpfs there, private to this run.

    Mounted once per run even when /run/netns is a mount already: that one may be shared
    with other test runs on the machine (tests/run.sh gives each a private mount namespace,
    but a mount it inherits still shows the same files), whose `ip netns del agfw-app`
    would pull this run's namespaces away mid-test.
    """
    Path("/run/netns").mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run/netns")


def setup_topology() -> None:
    """Create APP, NET and PEER with their links, addresses and routes (from scratch)."""
    _ensure_netns_dir()
    teardown_topology()
    for ns in (APP, NET, PEER):
        sh("ip", "netns", "add", ns)
        sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
    sh("ip", "link", "add", "eth0", "netns", APP, "type", "veth", "peer", "eth0", "netns", NET)
    sh("ip", "link", "add", PEER_IF, "netns", APP, "type", "veth", "peer", "eth0", "netns", PEER)

    def ns_ip(ns: str, *args: str) -> None:
        sh(*in_ns(ns, "ip", *args))

    for ns, link, v4, v6 in (
        (APP, "eth0", APP_V4, APP_V6),
        (NET, "eth0", NET_V4, NET_V6),
        (APP, PEER_IF, APP_PEER_V4, APP_PEER_V6),
        (PEER, "eth0", PEER_V4, PEER_V6),
    ):
        ns_ip(ns, "addr", "add", f"{v4}/30", "dev", link)
        ns_ip(ns, "-6", "addr", "add", f"{v6}/64", "dev", link, "nodad")
        ns_ip(ns, "link", "set", link, "up")
    for ip in (ORIGIN_V4, DNS_V4, UPSTREAM_V4):
        ns_ip(NET, "addr", "add", f"{ip}/32", "dev", "lo")
    for ip in (ORIGIN_V6, DNS_V6, UPSTREAM_V6):
        ns_ip(NET, "-6", "addr", "add", f"{ip}/128", "dev", "lo", "nodad")
    ns_ip(APP, "route", "add", "default", "via", NET_V4)
    ns_ip(APP, "-6", "route", "add", "default", "via", NET_V6)
    ns_ip(PEER, "route", "add", "default", "via", APP_PEER_V4)
    ns_ip(PEER, "-6", "route", "add", "default", "via", APP_PEER_V6)
    ns_ip(NET, "route", "add", "198.51.100.4/30", "via", APP_V4)
    ns_ip(NET, "-6", "route", "add", "2001:db8:2::/64", "via", APP_V6)
    sh(*in_ns(APP, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"))


def teardown_topology() -> None:
    """Delete the namespaces (their links and rules go with them)."""
    for ns in (APP, NET, PEER):
        sh("ip", "netns", "del", ns, check=False)


def flush_rules(ns: str) -> None:
    """Back to no rules at all in `ns` (between tests)."""
    sh(*in_ns(ns, "nft", "flush", "ruleset"))


def saved_rules(ns: str) -> str:
    """`iptables-save` + `ip6tables-save` of `ns`, normalised: no comments, no counters,
    and without tables that hold nothing (iptables-nft leaves those behind)."""
    out: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        text = sh(*in_ns(ns, tool))
        out.append(f"# {tool}")
        table: list[str] = []
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            line = re.sub(r"\[\d+:\d+\]", "[0:0]", line)
            table.append(line)
            if line == "COMMIT":
                if not _empty_table(table):
                    out += table
                table = []
    return "\n".join(out) + "\n"


def _empty_table(lines: list[str]) -> bool:
    return all(
        re.fullmatch(r"\*\w+|:[A-Z]+ ACCEPT \[0:0\]|COMMIT", line) is not None for line in lines
    )


def nft_rules(ns: str) -> str:
    """`nft list ruleset` of `ns` without counters and handles."""
    text = sh(*in_ns(ns, "nft", "list", "ruleset"))
    return re.sub(r" counter packets \d+ bytes \d+", "", text)


# ---------------------------------------------------------------- processes


class Background:
    """A process started in a namespace, with its output in a file; always stopped."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="agfw-"))
        self.dir.chmod(0o755)
        self.log_path = self.dir / "out.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_output(self, needle: str, timeout: float = 20) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} early:\n{self.text()}")
            return needle in self.text()

        wait_for(ready, timeout, f"{needle!r} in output")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the whole process group; SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._log.close()
        return self.proc.returncode


def start_origins() -> Background:
    """The origin, DNS and upstream-proxy stand-ins in NET, as root."""
    bg = Background(in_ns(NET, sys.executable, "-m", "tests.e2e.firewall_helpers", "serve"))
    bg.wait_output("READY")
    return bg


def write_config(directory: Path, config: dict | None = None) -> Path:
    """The proxy's admin-settings.json, readable by the proxy's uid, writable only by root."""
    path = directory / "admin-settings.json"
    path.write_text(json.dumps(config or PROXY_CONFIG))
    path.chmod(0o644)
    return path


def start_proxy(config: Path, *listen: str, uid: int = PROXY_UID, port: int = 15001) -> Background:
    """The real proxy in APP as `uid`, marking its upstream sockets (CAP_NET_ADMIN only)."""
    addresses = listen or (f"127.0.0.1:{port}", f"[::1]:{port}")
    args = [sys.executable, "-m", "proxy.cli", "run", "--config", str(config)]
    args += [a for address in addresses for a in ("--listen", address)]
    args += ["--mark", hex(MARK), "--log-format", "json", "--connect-timeout", "3"]
    bg = Background(in_ns(APP, *as_uid(uid, uid, *args, caps=("net_admin",))))
    bg.wait_output("listening on")
    return bg


def start_local_upstream(directory: Path, port: int) -> Background:
    """Real tinyproxy in APP as LOCAL_UPSTREAM_UID, bound to the wildcard address (no
    `Listen`, its default: 0.0.0.0 and [::]) and allowing every client (no `Allow`)."""
    conf = directory / f"tinyproxy-{port}.conf"
    conf.write_text(f"Port {port}\nTimeout 30\nMaxClients 50\nLogLevel Warning\n")
    conf.chmod(0o644)
    uid = LOCAL_UPSTREAM_UID
    bg = Background(in_ns(APP, *as_uid(uid, uid, "tinyproxy", "-d", "-c", str(conf))))

    def listening() -> bool:
        if bg.proc.poll() is not None:
            raise AssertionError(f"tinyproxy exited {bg.proc.returncode}:\n{bg.text()}")
        out = sh(*in_ns(APP, "ss", "-Hltn", f"sport = :{port}"))
        return "0.0.0.0:" in out and "[::]:" in out

    wait_for(listening, 10, f"tinyproxy listening on *:{port}")
    return bg


def proxy_records(proxy: Background) -> list[dict]:
    """The proxy's per-connection audit records so far."""
    records = []
    for line in proxy.text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if "dst" in record:
                    records.append(record)
    return records


@contextlib.contextmanager
def held_flow(host: str, port: int, uid: int = CLIENT_UID) -> Iterator[subprocess.Popen[str]]:
    """A TCP flow opened now and kept open: the test sends it on later with `again`."""
    cmd = [sys.executable, "-m", "tests.e2e.firewall_helpers", "hold", host, str(port)]
    proc = subprocess.Popen(
        in_ns(APP, *as_uid(uid, uid, *cmd)),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def held_answer(proc: subprocess.Popen[str]) -> dict:
    """The next JSON line a `hold` probe printed (bounded by the probe's own timeouts)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise AssertionError("hold probe ended without an answer")
    return json.loads(line)


# ---------------------------------------------------------------- the probes themselves

TIMEOUT = 3.0


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tcp(host: str, port: int, payload: bytes, mark: int | None) -> dict:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        sock.connect((host, port))
        sock.sendall(payload)
        data = sock.recv(4096)
        return {"reply": data.decode(errors="replace")}
    except OSError as exc:
        return {"error": type(exc).__name__}
    finally:
        sock.close()


def _udp(host: str, port: int) -> dict:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    sock.settimeout(1.5)
    try:
        sock.connect((host, port))
        sock.send(b"PING\n")
        return {"reply": sock.recv(4096).decode(errors="replace")}
    except OSError as exc:
        return {"error": type(exc).__name__}
    finally:
        sock.close()


def _icmp_echo(host: str) -> dict:
    """One ICMP/ICMPv6 echo request over a raw socket (the probe runs as root)."""
    v6 = ":" in host
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    sock = socket.socket(_family(host), socket.SOCK_RAW, proto)
    sock.settimeout(1.5)
    kind = 128 if v6 else 8
    body = struct.pack("!HH", 0x4147, 1) + b"airgap"
    header = struct.pack("!BBH", kind, 0, 0) + body
    if not v6:  # the kernel fills in the ICMPv6 checksum, not the ICMP one
        total = sum(struct.unpack(f"!{len(header) // 2}H", header))
        total = (total >> 16) + (total & 0xFFFF)
        checksum = ~(total + (total >> 16)) & 0xFFFF
        header = struct.pack("!BBH", kind, 0, checksum) + body
    try:
        sock.sendto(header, (host, 0))
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            data, _ = sock.recvfrom(4096)
            icmp = data if v6 else data[(data[0] & 0x0F) * 4 :]
            if icmp[0] == (129 if v6 else 0):
                return {"reply": "echo-reply"}
        return {"error": "timeout"}
    except OSError as exc:
        return {"error": type(exc).__name__}
    finally:
        sock.close()


def _tunnel(proxy: str, port: int, target: str, target_port: int, mark: int | None) -> dict:
    """CONNECT through an HTTP proxy at proxy:port, then one exchange with the target."""
    sock = socket.socket(_family(proxy), socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
        sock.connect((proxy, port))
        where = f"[{target}]:{target_port}" if ":" in target else f"{target}:{target_port}"
        sock.sendall(f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 8192:
            chunk = sock.recv(4096)
            if not chunk:
                return {"error": "EOF", "head": head.decode(errors="replace")}
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 200 " not in f"{status} ":
            return {"error": "refused", "status": status}
        sock.sendall(b"PING\n")
        return {"reply": sock.recv(4096).decode(errors="replace")}
    except OSError as exc:
        return {"error": type(exc).__name__}
    finally:
        sock.close()


def _hold(host: str, port: int) -> None:
    """Open a flow, answer, then on each stdin line send again and answer (bounded)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((host, port))
        sock.sendall(b"PING\n")
        print(json.dumps({"reply": sock.recv(4096).decode(errors="replace")}), flush=True)
    except OSError as exc:
        print(json.dumps({"error": type(exc).__name__}), flush=True)
        return
    for _ in range(10):
        if not sys.stdin.readline():
            return
        try:
            sock.sendall(b"AGAIN\n")
            data = sock.recv(4096)
            answer = {"reply": data.decode(errors="replace")} if data else {"error": "EOF"}
        except OSError as exc:
            answer = {"error": type(exc).__name__}
        print(json.dumps(answer), flush=True)


async def _serve() -> None:
    """Origins: every TCP chunk gets `ORIGIN ip port FROM peer`, every datagram `UDP ip port`."""

    def tcp_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> object:
        async def handle() -> None:
            local = writer.get_extra_info("sockname")
            peer = writer.get_extra_info("peername")
            with contextlib.suppress(OSError):
                while await reader.read(4096):
                    writer.write(f"ORIGIN {local[0]} {local[1]} FROM {peer[0]}\n".encode())
                    await writer.drain()
            writer.close()

        return asyncio.ensure_future(handle())

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple) -> None:
            local = self.transport.get_extra_info("sockname")
            self.transport.sendto(f"UDP {local[0]} {local[1]}\n".encode(), addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    for host in (ORIGIN_V4, ORIGIN_V6):
        for port in ORIGIN_TCP_PORTS:
            await asyncio.start_server(tcp_handler, host, port)
        await loop.create_datagram_endpoint(Udp, local_addr=(host, UDP_PORT))
    for host in (UPSTREAM_V4, UPSTREAM_V6):
        await asyncio.start_server(tcp_handler, host, UPSTREAM_PORT)
    for host in (DNS_V4, DNS_V6):
        await loop.create_datagram_endpoint(Udp, local_addr=(host, 53))
    print("READY", flush=True)
    await asyncio.sleep(3600)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firewall_helpers")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("serve")
    tcp = sub.add_parser("tcp")
    tcp.add_argument("host")
    tcp.add_argument("port", type=int)
    tcp.add_argument("--mark", type=lambda s: int(s, 0))
    udp = sub.add_parser("udp")
    udp.add_argument("host")
    udp.add_argument("port", type=int)
    icmp = sub.add_parser("icmp")
    icmp.add_argument("host")
    tunnel = sub.add_parser("tunnel", help="CONNECT target:port via PROXY:port, per PROXY")
    tunnel.add_argument("port", type=int)
    tunnel.add_argument("target")
    tunnel.add_argument("target_port", type=int)
    tunnel.add_argument("proxies", nargs="+")
    tunnel.add_argument("--mark", type=lambda s: int(s, 0))
    hold = sub.add_parser("hold")
    hold.add_argument("host")
    hold.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.what == "serve":
        asyncio.run(_serve())
    elif args.what == "tcp":
        print(json.dumps(_tcp(args.host, args.port, b"PING\n", args.mark)))
    elif args.what == "udp":
        print(json.dumps(_udp(args.host, args.port)))
    elif args.what == "icmp":
        print(json.dumps(_icmp_echo(args.host)))
    elif args.what == "tunnel":
        answers = {
            p: _tunnel(p, args.port, args.target, args.target_port, args.mark) for p in args.proxies
        }
        print(json.dumps(answers))
    elif args.what == "hold":
        _hold(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
