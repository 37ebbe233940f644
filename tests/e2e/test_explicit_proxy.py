"""End to end: the explicit proxy listener (`--explicit-listen`) with real clients.

curl (`-x`, `--proxytunnel`), wget, Python's urllib and `pip download` talk to the real
proxy process; origins, tinyproxy, microsocks and stunnel are the rig's (harness.py). No
redirect rule is involved: the clients are proxy-aware.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e import harness as h
from tests.e2e.firewall_helpers import python_readable_by_all

pytestmark = pytest.mark.e2e

FAST = ("--pac-refresh", "1", "--pac-retry-max", "1")


def static(exclude: list[str], http: str = "", https: str = "", ports: str = "80,443") -> dict:
    return {
        "configurationFileVersion": 2,
        "containersProxy": {
            "mode": "manual",
            "http": http,
            "https": https,
            "exclude": exclude,
            "transparentPorts": ports,
        },
    }


class Explicit(h.ProxyProcess):
    """The proxy with an explicit listener on 127.0.0.1 and no transparent one."""

    def __init__(self, config: dict | None, *extra: str, **kwargs: object) -> None:
        self.eport = h.free_port()
        super().__init__(
            config,
            "--listen",
            "none",
            "--explicit-listen",
            f"127.0.0.1:{self.eport}",
            *extra,
            listen=(),
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.eport}"


@pytest.fixture
def explicit(origins: h.Origins) -> Iterator[Callable[..., Explicit]]:
    started: list[Explicit] = []

    def start(config: dict | None, *extra: str, **kwargs: object) -> Explicit:
        proxy = Explicit(config, *extra, **kwargs)
        started.append(proxy)
        proxy.start()
        return proxy

    yield start
    for proxy in reversed(started):
        proxy.stop()


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def raw(proxy: Explicit, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes to the explicit listener and read the answer until it closes."""
    with socket.create_connection(("127.0.0.1", proxy.eport), timeout) as sock:
        sock.sendall(data)
        return h.recv_all(sock)


def body_json(out: str) -> dict:
    return json.loads(out[out.index("{") :])


def explicit_records(proxy: Explicit) -> list[dict]:
    return [r for r in proxy.records() if r.get("path") == "explicit"]


def test_absolute_form_direct_rewrites_host_and_adds_via(explicit) -> None:
    proxy = explicit(static(["allowed.example"]))
    done = curl("-x", proxy.url, "-H", "Host: evil.example", "http://allowed.example/p?q=1")
    assert done.returncode == 0, done.stderr
    answer = body_json(done.stdout)
    assert answer["origin"] == f"{h.ORIGIN_A}:80"
    assert answer["line"] == "GET /p?q=1 HTTP/1.1"  # origin-form to the origin
    assert answer["host"] == "allowed.example"  # the URI's authority wins over Host
    record = proxy.wait_record(lambda r: r.get("method") == "GET")
    assert record["path"] == "explicit" and record["decision"] == "DIRECT"
    assert (record["host"], record["port"], record["status"]) == ("allowed.example", 80, 200)
    assert record["route"] == f"DIRECT {h.ORIGIN_A}:80" and record["bytes_down"] > 0
    head = curl("-x", proxy.url, "-D", "-", "-o", "/dev/null", "http://allowed.example/")
    assert "via: 1.1 airgap-proxy" in head.stdout.lower()


def test_connect_tunnel_and_reject(explicit) -> None:
    proxy = explicit(static(["allowed.example"]))
    done = curl("-x", proxy.url, "--proxytunnel", "http://allowed.example:8080/t")
    assert done.returncode == 0, done.stderr
    assert body_json(done.stdout)["origin"] == f"{h.ORIGIN_A}:8080"
    record = proxy.wait_record(lambda r: r.get("method") == "CONNECT")
    assert record["status"] == 200 and record["bytes_up"] > 0 and record["bytes_down"] > 0
    # 8080 is outside transparentPorts: the explicit path still decides it by the policy.
    refused = raw(proxy, b"CONNECT evil.example:8080 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Proxy-Status: airgap-proxy; error=http_request_denied" in refused
    assert b"Connections to evil.example are forbidden by policy" in refused
    assert h.ORIGIN_EVIL not in {ip for ip, _ in list(proxy_hits(proxy))}


def proxy_hits(proxy: Explicit) -> list[tuple[str, int]]:
    return [(r["dst"].rsplit(":", 1)[0], 0) for r in explicit_records(proxy) if r["dst"]]


def test_keep_alive_second_request_is_decided_on_its_own(explicit, origins) -> None:
    proxy = explicit(static(["allowed.example"]))
    before = len(origins.hits)
    done = curl(
        "-x", proxy.url, "-o", "/dev/null", "-o", "/dev/null",
        "-w", "%{http_code} %{num_connects}\n",
        "http://allowed.example/one", "http://evil.example/two",
    )  # fmt: skip
    assert done.stdout.split() == ["200", "1", "403", "0"], done  # one connection, both
    records = explicit_records(proxy)
    assert [r["status"] for r in records] == [200, 403]
    assert records[0]["client"] == records[1]["client"]
    assert all(ip != h.ORIGIN_EVIL for ip, _ in origins.hits[before:])


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT localhost:22 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT [::1]:22 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT 0.0.0.0:22 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ],
)
def test_loopback_is_refused_even_when_allowed(explicit, request_bytes: bytes) -> None:
    proxy = explicit(static(["localhost", "127.0.0.1", "::1", "0.0.0.0"]))
    answer = raw(proxy, request_bytes)
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert b"error=destination_ip_prohibited" in answer


def test_own_listener_is_refused(explicit) -> None:
    """A wildcard listener: its port on any local address is the proxy itself."""
    eport = h.free_port()
    proxy = explicit(
        static(["allowed.example"]),
        "--explicit-listen",
        f"0.0.0.0:{eport}",
    )
    # allowed.example is a local address of this namespace (the rig puts it on lo).
    answer = raw(proxy, f"CONNECT allowed.example:{eport} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert b"own listener" in answer
    assert "is not a loopback address" in proxy.log_text()


SMUGGLING = [
    (b"POST http://allowed.example/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST http://allowed.example/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
     b"Content-Length: 5\r\n\r\nabcde", 400),
    (b"GET http://allowed.example/ HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", 400),
    (b"GET http://allowed.example/ HTTP/1.1\nHost: a\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: allowed.example\r\n\r\n", 400),
    (b"GET https://allowed.example/ HTTP/1.1\r\nHost: allowed.example\r\n\r\n", 501),
    (b"CONNECT allowed.example:0 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"CONNECT allowed.example HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"POST http://allowed.example/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET http://allowed.example/ HTTP/1.1\r\nHost: a\r\n"
     + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"GET http://allowed.example/ HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 70000, 431),
    (b"POST http://allowed.example/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nabc\r\n0\r\n\r\n", 400),
]  # fmt: skip


def test_smuggling_and_malformed_requests(explicit, origins) -> None:
    proxy = explicit(static(["allowed.example"]))
    for data, status in SMUGGLING:
        answer = raw(proxy, data)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (data[:60], answer[:200])
        assert b"Proxy-Status: airgap-proxy; error=http_request_error" in answer
        assert b"Connection: close" in answer
    assert all(r["status"] >= 400 for r in explicit_records(proxy))


def test_502_and_504(explicit) -> None:
    proxy = explicit(
        static(["allowed.example", "nowhere.invalid", h.ORIGIN_BLACKHOLE]),
        "--connect-timeout",
        "1",
    )
    refused = raw(proxy, b"CONNECT allowed.example:81 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 502 ") and b"error=destination_unavailable" in refused
    unknown = raw(proxy, b"GET http://nowhere.invalid/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert unknown.startswith(b"HTTP/1.1 502 ") and b"error=destination_not_found" in unknown
    silent = raw(proxy, f"CONNECT {h.ORIGIN_BLACKHOLE}:80 HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    assert silent.startswith(b"HTTP/1.1 504 ") and b"error=connection_timeout" in silent


def test_ip_entries_match_resolved_addresses(explicit) -> None:
    """rr.example resolves to ORIGIN_B and ORIGIN_C; only ORIGIN_C is excluded: the request
    goes to ORIGIN_C, the address that matched."""
    proxy = explicit(static([f"{h.ORIGIN_C}/32"]))
    for _ in range(3):
        done = curl("-x", proxy.url, "http://rr.example:8080/")
        assert body_json(done.stdout)["origin"] == f"{h.ORIGIN_C}:8080", done
    assert curl("-x", proxy.url, "http://allowed.example/").stdout.startswith("Connections to")


def test_proxy_route_with_credentials(explicit, upstreams) -> None:
    up = f"http://{h.UPSTREAM_USER}:{h.UPSTREAM_PASSWORD}@127.0.0.1:{upstreams.http_auth_port}"
    proxy = explicit(static([], http=up, https=up))
    done = curl("-x", proxy.url, "http://allowed.example:8080/via-proxy")
    assert body_json(done.stdout)["line"] == "GET /via-proxy HTTP/1.1", done
    done = curl("-x", proxy.url, "--proxytunnel", "http://www.allowed.example:443/")
    assert body_json(done.stdout)["origin"] == f"{h.ORIGIN_A}:443", done
    record = proxy.wait_record(lambda r: r.get("method") == "GET")
    assert record["route"] == f"PROXY 127.0.0.1:{upstreams.http_auth_port}"
    assert h.UPSTREAM_PASSWORD not in proxy.log_text()


def test_upstream_proxy_authenticate_never_reaches_the_client(explicit, upstreams) -> None:
    up = f"http://127.0.0.1:{upstreams.http_auth_port}"  # no credentials: tinyproxy 407s
    proxy = explicit(static([], http=up, https=up))
    done = curl("-x", proxy.url, "-D", "-", "http://allowed.example/")
    assert "proxy-authenticate" not in done.stdout.lower()
    assert done.stdout.startswith("HTTP/1.1 502 "), done.stdout


def test_socks_route(explicit, upstreams) -> None:
    up = f"socks5://127.0.0.1:{upstreams.socks_port}"
    proxy = explicit(static([], http=up, https=up))
    done = curl("-x", proxy.url, "http://rr.example:8080/s")
    answer = body_json(done.stdout)
    assert answer["line"] == "GET /s HTTP/1.1" and answer["host"] == "rr.example:8080"
    done = curl("-x", proxy.url, "-p", "http://allowed.example:443/")
    assert body_json(done.stdout)["origin"] == f"{h.ORIGIN_A}:443"


def test_https_route(explicit, upstreams) -> None:
    front = h.TlsFront(backend_port=upstreams.http_port).start()
    try:
        up = f"https://localhost:{front.port}"
        proxy = explicit(static([], http=up, https=up), "--ca-bundle", str(front.cert))
        done = curl("-x", proxy.url, "http://allowed.example:8080/tls")
        assert body_json(done.stdout)["line"] == "GET /tls HTTP/1.1", done
        done = curl("-x", proxy.url, "-p", "http://allowed.example:8080/tunnel")
        assert body_json(done.stdout)["origin"] == f"{h.ORIGIN_A}:8080", done
    finally:
        front.stop()


@contextlib.contextmanager
def body_origin() -> Iterator[int]:
    """An aiohttp origin on ORIGIN_B that reads the whole request body and answers its
    length and digest (the rig's ident origins answer after the first read)."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = h.free_port()

    async def handle(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "chunked": request.headers.get("Transfer-Encoding", ""),
                "expect": request.headers.get("Expect", ""),
            }
        )

    async def start() -> web.AppRunner:
        app = web.Application(client_max_size=1 << 26)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, h.ORIGIN_B, port).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_bodies_chunked_and_expect_continue(explicit) -> None:
    proxy = explicit(static(["other.example"]))
    data = os.urandom(3 << 20)
    with body_origin() as port:
        for extra in (
            ("-H", "Transfer-Encoding: chunked"),
            ("-H", "Expect: 100-continue"),
            (),
        ):
            done = subprocess.run(
                ["curl", "-sS", "--max-time", "20", "-x", proxy.url, *extra,
                 "--data-binary", "@-", f"http://other.example:{port}/post?x=1"],
                input=data, capture_output=True, timeout=30,
            )  # fmt: skip
            answer = json.loads(done.stdout)
            assert (answer["method"], answer["path"]) == ("POST", "/post?x=1"), done
            assert answer["length"] == len(data), done
            assert answer["sha256"] == hashlib.sha256(data).hexdigest()
            assert answer["expect"] == ""  # answered by the proxy, not passed on
        assert explicit_records(proxy)[-1]["bytes_up"] >= len(data)


def test_wget_and_urllib(explicit) -> None:
    proxy = explicit(static(["allowed.example"]))
    env = {"PATH": os.environ["PATH"], "http_proxy": proxy.url, "https_proxy": proxy.url}
    out = subprocess.run(
        ["wget", "-q", "-O", "-", "http://allowed.example/wget"],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert body_json(out.stdout)["line"] == "GET /wget HTTP/1.1", out
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy.url}))
    with opener.open("http://allowed.example:8080/urllib", timeout=10) as resp:
        assert json.loads(resp.read())["line"] == "GET /urllib HTTP/1.1"
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open("http://evil.example/", timeout=10)
    assert info.value.code == 403


def _tiny_wheel(directory: Path) -> Path:
    name = "airgaptiny-1.0-py3-none-any.whl"
    files = {
        "airgaptiny/__init__.py": b"",
        "airgaptiny-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: airgaptiny\n"
        b"Version: 1.0\n",
        "airgaptiny-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = io.StringIO()
    for path, content in files.items():
        digest = hashlib.sha256(content).digest()
        import base64

        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.write(f"{path},sha256={b64},{len(content)}\n")
    record.write("airgaptiny-1.0.dist-info/RECORD,,\n")
    path = directory / name
    with zipfile.ZipFile(path, "w") as zf:
        for p, content in files.items():
            zf.writestr(p, content)
        zf.writestr("airgaptiny-1.0.dist-info/RECORD", record.getvalue())
    return path


def test_pip_download_from_a_local_index(explicit) -> None:
    root = Path(tempfile.mkdtemp(prefix="airgap-index-"))
    try:
        pkg = root / "simple" / "airgaptiny"
        pkg.mkdir(parents=True)
        wheel = _tiny_wheel(pkg)
        (pkg / "index.html").write_text(f'<a href="{wheel.name}">{wheel.name}</a>\n')
        port = h.free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", h.ORIGIN_B, str(port)],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            h.wait_listening(h.ORIGIN_B, port)
            proxy = explicit(static(["other.example"]))
            dest = root / "out"
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--isolated", "--no-cache-dir",
                 "--trusted-host", "other.example", "--no-deps",
                 "--disable-pip-version-check", "--proxy", proxy.url,
                 "--index-url", f"http://other.example:{port}/simple/", "-d", str(dest),
                 "airgaptiny"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert (dest / wheel.name).read_bytes() == wheel.read_bytes()
            assert any(r.get("host") == "other.example" for r in explicit_records(proxy))
        finally:
            server.terminate()
            server.wait(5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_pac_policy_fails_closed_and_recovers(explicit, upstreams) -> None:
    server = h.PacServer(
        f"""function FindProxyForURL(url, host) {{
  if (host == "allowed.example") return "DIRECT";
  if (url == "http://rr.example:8080") return "PROXY 127.0.0.1:{upstreams.http_port}";
  return "PROXY reject.docker.internal:1";
}}"""
    )
    try:
        config = {"containersProxy": {"mode": "manual", "pac": server.url}}
        proxy = explicit(config, *FAST, "--workers", "1")
        down = curl("-x", proxy.url, "http://allowed.example/")
        assert "PAC unavailable" in down.stdout, down
        server.up()
        h.wait_for(lambda: "PAC script in use" in proxy.log_text(), what="the PAC to load")
        ok = curl("-x", proxy.url, "http://allowed.example/")
        assert body_json(ok.stdout)["origin"] == f"{h.ORIGIN_A}:80", ok
        via = curl("-x", proxy.url, "http://rr.example:8080/pac")
        assert body_json(via.stdout)["line"] == "GET /pac HTTP/1.1", via
        blocked = curl("-x", proxy.url, "-p", "http://evil.example:443/")
        assert blocked.returncode != 0 and "403" in blocked.stderr
        failures = proxy.log_text().count("PAC failed")
        server.down()
        h.wait_for(lambda: proxy.log_text().count("PAC failed") > failures, what="a failure")
        assert "PAC unavailable" in curl("-x", proxy.url, "http://allowed.example/").stdout
    finally:
        server.close()


def test_explicit_only_as_an_ordinary_user(origins) -> None:
    """No root, no CAP_NET_ADMIN, no transparent listener."""
    tmp_path = Path(tempfile.mkdtemp(prefix="airgap-user-"))
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(static(["allowed.example"])))
    config.chmod(0o644)
    tmp_path.chmod(0o755)
    port = h.free_port()
    log = tmp_path / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # The checkout and the interpreter may sit in 0700 directories (a fresh CI
            # clone under mktemp -d, /root): made readable to this process tree only.
            [*python_readable_by_all(),
             "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
             sys.executable, "-m", "proxy.cli", "run", "--config", str(config),
             "--listen", "none", "--explicit-listen", f"127.0.0.1:{port}", "--workers", "1"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            h.wait_for(lambda: "listening on" in log.read_text(), what="the proxy to listen")
            done = curl("-x", f"http://127.0.0.1:{port}", "http://allowed.example/user")
            assert body_json(done.stdout)["line"] == "GET /user HTTP/1.1", log.read_text()
            assert "CAP_NET_ADMIN" not in log.read_text()
        finally:
            proc.terminate()
            assert proc.wait(15) == 0, log.read_text()


def test_stop_ends_idle_keep_alive_connections_at_once(explicit) -> None:
    """SIGTERM: a keep-alive connection waiting for its next request does not hold the
    drain (60 s here) open."""
    proxy = explicit(static(["allowed.example"]), "--workers", "1", "--drain-timeout", "60")
    with socket.create_connection(("127.0.0.1", proxy.eport), 10) as sock:
        sock.sendall(b"GET http://allowed.example/ HTTP/1.1\r\nHost: allowed.example\r\n\r\n")
        answer = b""
        while b"}" not in answer:  # the ident body is one JSON object
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        proxy.signal()
        assert proxy.proc is not None
        assert proxy.proc.wait(20) == 0
        assert sock.recv(10) == b""  # closed by the proxy
