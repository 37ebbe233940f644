"""The end-to-end rig: test hosts, origin servers, redirect rules, upstream proxies, the proxy.

Everything runs inside the private network + mount namespace that `tests/run.sh` creates
(`AIRGAP_PRIVATE_NETNS=1`): test addresses from 203.0.113.0/24 and 2001:db8::/32 live on
its loopback, a private /etc/hosts gives test names their addresses, and only traffic of
sockets marked CLIENT_MARK is redirected to the proxy, so origin servers, upstream proxies
and the proxy itself are never looped back into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO

CLIENT_MARK = 0x1
CHAIN = "AIRGAP_TEST"

ORIGIN_A = "203.0.113.10"  # allowed.example
ORIGIN_B = "203.0.113.11"  # rr.example (1 of 2)
ORIGIN_C = "203.0.113.12"  # rr.example (2 of 2)
ORIGIN_EVIL = "203.0.113.66"  # a host no policy allows
ORIGIN_BLACKHOLE = "198.51.100.99"  # local, but its packets are dropped: a silent host
ORIGIN_V6 = "2001:db8::10"
ORIGIN_V6_EVIL = "2001:db8::66"

HOSTS = {
    "allowed.example": [ORIGIN_A],
    "www.allowed.example": [ORIGIN_A],
    "rr.example": [ORIGIN_B, ORIGIN_C],
    "evil.example": [ORIGIN_EVIL],
    "v6.allowed.example": [ORIGIN_V6],
    "other.example": [ORIGIN_B],
    "docs.docker.com": [ORIGIN_A],
}

IDENT_PORTS = (80, 443, 8080)
UPSTREAM_USER = "agent"
UPSTREAM_PASSWORD = "s3cret-Pw"
ECHO_PORT = 7
BULK_PORT = 9000


def require_private_netns() -> None:
    """E2E tests only run in the namespace tests/run.sh made; elsewhere they skip."""
    if os.environ.get("AIRGAP_PRIVATE_NETNS") != "1" or os.geteuid() != 0:
        pytest.skip("needs root in the private namespace of tests/run.sh")


def sh(*cmd: str, check: bool = True, input: str | None = None) -> str:
    """Run a command, returning stdout; a failure shows its stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- network set-up


def setup_network() -> None:
    """Test addresses on lo, a blackhole route, and a private /etc/hosts (idempotent)."""
    sh("ip", "link", "set", "lo", "up")
    existing = sh("ip", "-o", "addr", "show", "dev", "lo")
    for ip in (ORIGIN_A, ORIGIN_B, ORIGIN_C, ORIGIN_EVIL, ORIGIN_BLACKHOLE):
        if f" {ip}/" not in existing:
            sh("ip", "addr", "add", f"{ip}/32", "dev", "lo")
    for ip in (ORIGIN_V6, ORIGIN_V6_EVIL):
        if f" {ip}/" not in existing:
            sh("ip", "-6", "addr", "add", f"{ip}/128", "dev", "lo", "nodad")
    drop = ("INPUT", "-d", ORIGIN_BLACKHOLE, "-j", "DROP")
    if not _rule_exists(drop):
        sh("iptables", "-A", *drop)
    hosts = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
        f"{ip} {name}\n" for name, ips in HOSTS.items() for ip in ips
    )
    path = Path(tempfile.gettempdir()) / "airgap-test-hosts"
    path.write_text(hosts)
    mounts = Path("/proc/self/mounts").read_text()
    if " /etc/hosts " not in mounts:
        sh("mount", "--bind", str(path), "/etc/hosts")
    else:
        Path("/etc/hosts").write_text(hosts)


def _rule_exists(rule: tuple[str, ...]) -> bool:
    return subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode == 0


@contextlib.contextmanager
def redirect_to(port: int, dports: str = "1:65535") -> Iterator[None]:
    """Redirect marked client TCP (IPv4 and IPv6) to the proxy's port."""
    for tool in ("iptables", "ip6tables"):
        sh(tool, "-t", "nat", "-N", CHAIN, check=False)
        sh(tool, "-t", "nat", "-F", CHAIN)
        sh(tool, "-t", "nat", "-D", "OUTPUT", "-j", CHAIN, check=False)
        sh(tool, "-t", "nat", "-A", "OUTPUT", "-j", CHAIN)
        sh(
            tool, "-t", "nat", "-A", CHAIN, "-p", "tcp", "-m", "mark", "--mark", str(CLIENT_MARK),
            "--dport", dports, "-j", "REDIRECT", "--to-ports", str(port),
        )  # fmt: skip
    try:
        yield
    finally:
        for tool in ("iptables", "ip6tables"):
            sh(tool, "-t", "nat", "-D", "OUTPUT", "-j", CHAIN, check=False)
            sh(tool, "-t", "nat", "-F", CHAIN, check=False)
            sh(tool, "-t", "nat", "-X", CHAIN, check=False)


# --------------------------------------------------------------------------- origin servers


class Origins:
    """Origin servers on the test addresses, in a background thread's event loop.

    - ident (80, 443, 8080): reads the first chunk, answers an HTTP response whose body
      names the origin (`ORIGIN ip:port`), and closes; TLS clients just read those bytes.
    - echo (7): echoes until EOF, then sends `BYE` and closes (half-close).
    - bulk (9000): the client sends `UP` or `DOWN n`: UP hashes everything until EOF and
      answers the sha256; DOWN sends n deterministic bytes and closes.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: list[asyncio.AbstractServer] = []
        self.hits: list[tuple[str, int]] = []

    def start(self) -> None:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        fut.result(10)

    async def _start(self) -> None:
        addrs = [ORIGIN_A, ORIGIN_B, ORIGIN_C, ORIGIN_EVIL, ORIGIN_V6, ORIGIN_V6_EVIL]
        for ip in addrs:
            for port in IDENT_PORTS:
                self.servers.append(await asyncio.start_server(self._ident, ip, port))
            self.servers.append(await asyncio.start_server(self._echo, ip, ECHO_PORT))
            self.servers.append(await asyncio.start_server(self._bulk, ip, BULK_PORT))

    def stop(self) -> None:
        async def _stop() -> None:
            for server in self.servers:
                server.close()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @staticmethod
    def _local(writer: asyncio.StreamWriter) -> tuple[str, int]:
        addr = writer.get_extra_info("sockname")
        return addr[0], addr[1]

    async def _ident(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip, port = self._local(writer)
        self.hits.append((ip, port))
        try:
            first = await asyncio.wait_for(reader.read(65536), 5)
        except TimeoutError:
            first = b""
        line = first.split(b"\r\n", 1)[0][:80].decode("latin-1")
        host = ""
        for header in first.split(b"\r\n")[1:]:
            if header.lower().startswith(b"host:"):
                host = header[5:].strip().decode("latin-1")
        body = json.dumps({"origin": f"{ip}:{port}", "line": line, "host": host}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits.append(self._local(writer))
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"BYE")
        await writer.drain()
        writer.close()

    async def _bulk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits.append(self._local(writer))
        command = (await reader.readline()).decode().split()
        if command[:1] == ["UP"]:
            digest = hashlib.sha256()
            while data := await reader.read(1 << 18):
                digest.update(data)
            writer.write(digest.hexdigest().encode())
        elif command[:1] == ["DOWN"]:
            remaining = int(command[1])
            for chunk in pattern_chunks(remaining):
                writer.write(chunk)
                await writer.drain()
        await writer.drain()
        writer.close()


def pattern_chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    """Deterministic, non-repeating-looking bytes (so a reordering would change the hash)."""
    block = hashlib.sha256(b"airgap").digest() * (size // 32)
    sent = 0
    counter = 0
    while sent < total:
        n = min(size, total - sent)
        chunk = counter.to_bytes(8, "big") + block[8:n]
        yield chunk[:n]
        sent += n
        counter += 1


def pattern_digest(total: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(total):
        digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- clients


def client_socket(ip: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connected TCP socket whose traffic the test redirect rule sends to the proxy."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, CLIENT_MARK)
    sock.settimeout(timeout)
    sock.connect((ip, port))
    return sock


def recv_digest(sock: socket.socket) -> tuple[int, str]:
    """Read until EOF without keeping the bytes: (how many, their SHA-256 hex digest)."""
    digest = hashlib.sha256()
    received = 0
    while data := sock.recv(1 << 18):
        digest.update(data)
        received += len(data)
    return received, digest.hexdigest()


def recv_all(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Read until EOF (or a reset, which ends the data too)."""
    chunks = []
    total = 0
    while total < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def http_get(ip: str, port: int, host: str | None, timeout: float = 10.0) -> bytes:
    """One HTTP/1.1 request through the proxy; returns the whole answer."""
    with client_socket(ip, port, timeout) as sock:
        head = "GET / HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "") + "\r\n"
        sock.sendall(head.encode())
        return recv_all(sock)


def client_hello(server_name: str | None) -> bytes:
    """A real ClientHello from Python's ssl module (no network needed)."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def tls_probe(ip: str, port: int, server_name: str | None, timeout: float = 10.0) -> bytes:
    """Send a ClientHello with `server_name` and return what comes back until EOF."""
    with client_socket(ip, port, timeout) as sock:
        sock.sendall(client_hello(server_name))
        return recv_all(sock)


def origin_of(answer: bytes) -> str | None:
    """The `origin` an ident server put in its answer, or None when it never answered."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200"):
        return None
    try:
        return json.loads(body)["origin"]
    except (ValueError, KeyError):
        return None


# --------------------------------------------------------------------------- upstream proxies


def self_signed_cert(workdir: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A certificate for `name` (and 127.0.0.1), made by the openssl command."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    sh(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


@dataclass
class TlsFront:
    """stunnel terminating TLS in front of a plain upstream: an `HTTPS h:p` proxy."""

    backend_port: int
    port: int = 0
    cert: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="airgap-tls-")))

    def start(self) -> TlsFront:
        self.cert, key = self_signed_cert(self.workdir)
        self.port = free_port()
        conf = self.workdir / "stunnel.conf"
        conf.write_text(
            f"foreground = yes\npid =\n[front]\naccept = 127.0.0.1:{self.port}\n"
            f"cert = {self.cert}\nkey = {key}\nconnect = 127.0.0.1:{self.backend_port}\n"
        )
        self.proc = subprocess.Popen(
            ["stunnel4", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_listening("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Upstreams:
    """Real upstream proxies from Debian: tinyproxy (HTTP CONNECT), microsocks (SOCKS5)."""

    http_port: int = 0
    socks_port: int = 0
    http_auth_port: int = 0
    socks_auth_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="airgap-up-")))

    def start(self) -> None:
        for tool in ("tinyproxy", "microsocks"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not installed (./dev.sh setup installs it)")
        self.http_port = free_port()
        conf = self.workdir / "tinyproxy.conf"
        conf.write_text(
            f"Port {self.http_port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\n"
            "MaxClients 200\nLogLevel Warning\nUser nobody\nGroup nogroup\n"
            "DisableViaHeader Yes\n"
        )
        self.procs.append(subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)]))
        self.http_auth_port = free_port()
        auth_conf = self.workdir / "tinyproxy-auth.conf"
        auth_conf.write_text(
            conf.read_text().replace(f"Port {self.http_port}", f"Port {self.http_auth_port}")
            + f"BasicAuth {UPSTREAM_USER} {UPSTREAM_PASSWORD}\n"
        )
        self.procs.append(subprocess.Popen(["tinyproxy", "-d", "-c", str(auth_conf)]))
        self.socks_port = free_port()
        self.procs.append(
            subprocess.Popen(["microsocks", "-i", "127.0.0.1", "-p", str(self.socks_port)])
        )
        self.socks_auth_port = free_port()
        self.procs.append(
            subprocess.Popen(
                [
                    *("microsocks", "-i", "127.0.0.1", "-p", str(self.socks_auth_port)),
                    *("-u", UPSTREAM_USER, "-P", UPSTREAM_PASSWORD),
                ]
            )
        )
        for port in (self.http_port, self.http_auth_port, self.socks_port, self.socks_auth_port):
            wait_listening("127.0.0.1", port)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def wait_listening(ip: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ip}:{port} after {timeout}s")


# --------------------------------------------------------------------------- the proxy


class ProxyProcess:
    """The real `airgap-proxy run` process, with its log captured."""

    def __init__(
        self,
        config: dict | None,
        *extra: str,
        listen: tuple[str, ...] = ("127.0.0.1", "[::1]"),
        env: dict[str, str] | None = None,
    ) -> None:
        """`env`: proxy variables for `system` mode; the process never inherits the test
        runner's own (http_proxy, no_proxy...), with or without it."""
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.env.update(env or {})
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="airgap-proxy-"))
        self.log_path = self.workdir / "proxy.log"
        self.args = [arg for host in listen for arg in ("--listen", f"{host}:{self.port}")]
        if config is not None:
            path = self.workdir / "admin-settings.json"
            path.write_text(json.dumps(config))
            path.chmod(0o600)
            self.args += ["--config", str(path)]
        # Two workers unless a test says otherwise: the supervised multi-worker path is the
        # default on a multi-core host, and an explicit count keeps tests machine-independent.
        self.workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 2
        self.args += ["--log-format", "json", "--workers", str(self.workers), *extra]
        # An admin endpoint of its own (the default port would be shared by every proxy).
        self.admin_port: int | None = None
        if "--admin-listen" not in extra:
            self.admin_port = free_port()
            self.args += ["--admin-listen", f"127.0.0.1:{self.admin_port}"]
        self.proc: subprocess.Popen[bytes] | None = None

    def admin(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        """(status, body) of one request to the admin endpoint (never redirected: only
        marked client sockets are)."""
        assert self.admin_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def start(self) -> ProxyProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "run", *self.args],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited {self.proc.returncode}:\n{self.log_text()}")
            if "listening on" in self.log_text():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"proxy did not start:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        """The per-connection audit records logged so far."""
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_record(self, predicate, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no matching audit record; log:\n{self.log_text()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def rss_kib(pid: int) -> int:
    """A process's resident set size (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def unread_bytes(local_port: int) -> dict[int, int]:
    """Bytes received but not yet read by the application, for each established TCP socket
    of this namespace whose local port is `local_port` (the proxy's accepted connections),
    by the peer's port (/proc/net/tcp{,6}: `rx_queue`)."""
    unread: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "01" or int(fields[1].rsplit(":", 1)[1], 16) != local_port:
                continue  # not ESTABLISHED, or not on that port
            unread[int(fields[2].rsplit(":", 1)[1], 16)] = int(fields[4].split(":")[1], 16)
    return unread


def pipe_fds(pid: int) -> int:
    """How many pipe descriptors a process holds (the splice relay holds 4 per connection)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
    return count


# --------------------------------------------------------------------------- PAC server


class PacServer:
    """A real HTTP server for PAC files (aiohttp, in a background thread), controllable.

    `up()` / `down()` start and stop listening; `script` is served with an ETag, and a
    request carrying that ETag in If-None-Match gets 304. `requests` counts GETs by status.
    """

    def __init__(self, script: str = "") -> None:
        self.port = free_port()
        self.script = script
        self.requests: list[int] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/proxy.pac"

    def _call(self, coro) -> None:  # type: ignore[no-untyped-def]
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        from aiohttp import web

        etag = '"' + hashlib.sha256(self.script.encode()).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            self.requests.append(304)
            return web.Response(status=304, headers={"ETag": etag})
        self.requests.append(200)
        return web.Response(
            text=self.script,
            content_type="application/x-ns-proxy-autoconfig",
            headers={"ETag": etag},
        )

    def up(self) -> PacServer:
        from aiohttp import web

        async def start() -> None:
            app = web.Application()
            app.router.add_get("/proxy.pac", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._runner = runner

        self._call(start())
        return self

    def down(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None

        self._call(stop())

    def close(self) -> None:
        self.down()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true (bounded), else fail with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
