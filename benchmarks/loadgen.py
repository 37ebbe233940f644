"""Load generators the runner starts under the load group (so their TCP is redirected).

- `bulk`: K parallel connections to the bulk origin, each downloading n bytes into one
  reused buffer (`recv_into`, GIL released per read: the client is not the bottleneck).
  Prints one JSON line: bytes received, wall seconds, whether every byte arrived.
- `hold`: opens N connections to the hold origin and waits for each one's hello byte, so
  every connection is relayed end to end; prints `READY n`, then keeps them idle until a
  line on stdin (or `--max-seconds`), closes them and prints `CLOSED`.
- `connect`: the explicit proxy's set-up rate: `--conns` clients at once, each in a loop
  for `--seconds`: open a connection to the proxy, `CONNECT` the HTTP origin, read the
  `200`, send one GET through the tunnel, read the whole answer, close. Non-blocking
  sockets on one `selectors` loop, so one core drives many tunnels. Prints one JSON line:
  tunnels completed, errors, seconds.
- `bulk --via HOST:PORT`: the same bulk download, through a `CONNECT` tunnel of that proxy.

Every loop is bounded: socket timeouts and an overall deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import selectors
import socket
import sys
import threading
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.rig import BULK_IP, BULK_PORT, HOLD_PORT, HTTP_NAME

HEAD_END = b"\r\n\r\n"


def _tunnel(proxy: tuple[str, int], host: str, port: int, timeout: float) -> socket.socket:
    """A blocking socket through `proxy`'s CONNECT tunnel to host:port (OSError otherwise)."""
    sock = socket.create_connection(proxy, timeout=timeout)
    try:
        sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while HEAD_END not in head:
            chunk = sock.recv(4096)
            if not chunk or len(head) > 65536:
                raise OSError(f"CONNECT: no answer head ({head[:80]!r})")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 200" not in status or head.index(HEAD_END) + 4 != len(head):
            raise OSError(f"CONNECT refused: {status!r}")
        return sock
    except BaseException:
        sock.close()
        raise


def download(
    nbytes: int, timeout: float, out: list[int], index: int, via: tuple[str, int] | None = None
) -> None:
    """One bulk connection; `out[index]` gets the bytes received (-1 on an error)."""
    buf = bytearray(1 << 20)
    total = 0
    try:
        if via is None:
            sock = socket.create_connection((BULK_IP, BULK_PORT), timeout=timeout)
        else:
            sock = _tunnel(via, BULK_IP, BULK_PORT, timeout)
        with sock:
            sock.sendall(f"DOWN {nbytes}\n".encode())
            while n := sock.recv_into(buf):
                total += n
    except OSError as exc:
        print(f"loadgen: bulk connection {index}: {exc}", file=sys.stderr)
        total = -1
    out[index] = total


def cmd_bulk(args: argparse.Namespace) -> int:
    out = [0] * args.conns
    threads = [
        threading.Thread(target=download, args=(args.bytes, args.timeout, out, i, _via(args)))
        for i in range(args.conns)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ok = all(n == args.bytes for n in out)
    print(json.dumps({"bytes": sum(max(0, n) for n in out), "seconds": seconds, "ok": ok}))
    return 0 if ok else 1


def _via(args: argparse.Namespace) -> tuple[str, int] | None:
    if not getattr(args, "via", None):
        return None
    host, _, port = args.via.rpartition(":")
    return host, int(port)


class _Client:
    """One CONNECT client's state on the selector loop."""

    __slots__ = ("buf", "sock", "state")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.state = "connecting"
        self.buf = b""


def cmd_connect(args: argparse.Namespace) -> int:
    """Tunnels per second through an explicit proxy (see the module docstring)."""
    host, _, port_text = args.proxy.rpartition(":")
    proxy = (host, int(port_text))
    target = f"{args.target_host}:{args.target_port}"
    connect = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    get = f"GET / HTTP/1.1\r\nHost: {args.target_host}\r\nConnection: close\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    done = errors = 0
    first_errors: list[str] = []
    start = time.monotonic()
    stop_at = start + args.seconds
    hard_stop = stop_at + args.timeout

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(proxy)
        sel.register(sock, selectors.EVENT_WRITE, _Client(sock))

    def finish(client: _Client, ok: bool, why: str = "") -> None:
        nonlocal done, errors
        sel.unregister(client.sock)
        client.sock.close()
        if ok:
            done += 1
        else:
            errors += 1
            if len(first_errors) < 5:
                first_errors.append(why)
        if time.monotonic() < stop_at:
            open_one()

    for _ in range(args.conns):
        open_one()
    while sel.get_map() and time.monotonic() < hard_stop:
        for key, _events in sel.select(timeout=1.0):
            client: _Client = key.data
            sock = client.sock
            try:
                if client.state == "connecting":
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(client, False, os.strerror(err))
                        continue
                    sock.send(connect)
                    client.state = "connect-sent"
                    sel.modify(sock, selectors.EVENT_READ, client)
                    continue
                data = sock.recv(65536)
                if client.state == "connect-sent":
                    if not data:
                        finish(client, False, "closed before the CONNECT answer")
                        continue
                    client.buf += data
                    if HEAD_END not in client.buf:
                        continue
                    head, _, rest = client.buf.partition(HEAD_END)
                    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) or rest:
                        finish(client, False, f"CONNECT answered {head[:40]!r}")
                        continue
                    sock.send(get)
                    client.state = "get-sent"
                    client.buf = b""
                    continue
                if data:
                    client.buf += data
                    continue
                ok = client.buf.startswith(b"HTTP/1.1 200")
                finish(client, ok, "" if ok else f"GET answered {client.buf[:40]!r}")
            except OSError as exc:
                finish(client, False, str(exc))
    seconds = time.monotonic() - start
    left = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    out = {
        "tunnels": done,
        "errors": errors + left,
        "seconds": seconds,
        "first_errors": first_errors,
    }
    print(json.dumps(out))
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.conns + 64:
        print(f"loadgen: RLIMIT_NOFILE {hard} is too low for {args.conns}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.max_seconds
    socks: list[socket.socket] = []
    try:
        # Batches: connect many (the kernel completes them from the listen queue), then
        # collect their hello bytes, so the proxy always has work queued.
        while len(socks) < args.conns:
            if time.monotonic() > deadline:
                print("loadgen: hold: deadline passed while opening", file=sys.stderr)
                return 1
            batch = []
            for _ in range(min(args.batch, args.conns - len(socks))):
                sock = socket.create_connection((BULK_IP, HOLD_PORT), timeout=args.timeout)
                batch.append(sock)
                socks.append(sock)
            for sock in batch:
                if sock.recv(1) != b"H":
                    print("loadgen: hold: no hello byte (relay not up)", file=sys.stderr)
                    return 1
        print(f"READY {len(socks)}", flush=True)
        remaining = max(0.0, deadline - time.monotonic())
        select.select([sys.stdin], [], [], remaining)
        return 0
    except OSError as exc:
        print(f"loadgen: hold: {exc} after {len(socks)} connections", file=sys.stderr)
        return 1
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()
        print("CLOSED", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    bulk = sub.add_parser("bulk")
    bulk.add_argument("--conns", type=int, default=1)
    bulk.add_argument("--bytes", type=int, required=True, help="per connection")
    bulk.add_argument("--timeout", type=float, default=30.0, help="per socket operation")
    bulk.add_argument("--via", help="HOST:PORT of an explicit proxy: download through CONNECT")
    conn = sub.add_parser("connect")
    conn.add_argument("--proxy", required=True, help="HOST:PORT of the explicit proxy")
    conn.add_argument("--target-host", default=HTTP_NAME)
    conn.add_argument("--target-port", type=int, default=80)
    conn.add_argument("--conns", type=int, default=32)
    conn.add_argument("--seconds", type=float, default=5.0)
    conn.add_argument("--timeout", type=float, default=10.0, help="grace after --seconds")
    hold = sub.add_parser("hold")
    hold.add_argument("--conns", type=int, required=True)
    hold.add_argument("--batch", type=int, default=200)
    hold.add_argument("--timeout", type=float, default=10.0)
    hold.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    commands = {"bulk": cmd_bulk, "hold": cmd_hold, "connect": cmd_connect}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
