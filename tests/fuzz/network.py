"""Network fuzz: mutated ClientHellos and HTTP heads through the real listener.

Each input goes on a fresh connection to an address the policy does not allow, then the
client half-closes and reads what comes back (bounded). The oracle is the origins' own
count of connections: nothing may reach the forbidden address, and the allowed one only as
often as inputs carry an allowed name by the proxy's own sniffer (so a name the sniffer
did not see cannot open a way through). The caller checks the proxy answers a probe after.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from proxy.sniff import sniff
from rules.names import canonical_hostname
from tests.fuzz.mutate import Mutator
from tests.fuzz.targets import _HTTP_TOKENS, _TLS_TOKENS
from tests.unit.proxy.tls_hello import real_client_hello

#: A reply slower than this is a hang (the proxy's own bounds: peek, connect, are shorter).
REPLY_BOUND = 20.0


@dataclass(slots=True)
class NetFuzzResult:
    inputs: int = 0
    #: Inputs whose sniffed name is `allowed` or under it: the most that may reach it.
    allowed_names: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0


def seeds(allowed: str) -> tuple[list[bytes], list[bytes]]:
    """(hellos, heads) naming `allowed`, and near misses of it, to mutate."""
    names = [allowed, "www." + allowed, "x" + allowed, allowed + ".evil.example"]
    hellos = [real_client_hello(n) for n in names] + [real_client_hello(None)]
    heads = [f"GET / HTTP/1.1\r\nHost: {n}\r\nUser-Agent: f\r\n\r\n".encode() for n in names]
    heads.append(f"GET http://{allowed}/ HTTP/1.1\r\nHost: {allowed}\r\n\r\n".encode())
    return hellos, heads


def _may_reach(data: bytes, allowed: str) -> bool:
    name = sniff(data).hostname
    canonical = canonical_hostname(name) if name is not None else None
    return canonical is not None and (canonical == allowed or canonical.endswith("." + allowed))


def _exchange(connect: Callable[[int], socket.socket], port: int, data: bytes) -> str:
    """Send `data`, half-close, read to the end: what the client saw."""
    try:
        sock = connect(port)
    except OSError as exc:
        return f"connect failed ({type(exc).__name__})"
    got = b""
    try:
        sock.settimeout(REPLY_BOUND)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy may have decided (and closed) before it read everything
        while len(got) < 1 << 16:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        return "hang"
    except ConnectionResetError:
        return "reset" if not got else "answered, then reset"
    except OSError as exc:
        return f"error ({type(exc).__name__})"
    finally:
        sock.close()
    if not got:
        return "closed"
    if got.startswith(b"HTTP/1.1 403"):
        return "http 403"
    if got[:1] == b"\x15":
        return "tls alert"
    return "answered"


def fuzz_listener(
    connect: Callable[[int], socket.socket],
    allowed: str,
    inputs: int,
    seconds: float,
    seed: int = 0,
    concurrency: int = 8,
) -> NetFuzzResult:
    """Send up to `inputs` mutated hellos (port 443) and heads (port 80) within `seconds`;
    `connect(port)` opens a client connection that the proxy intercepts."""
    hellos, heads = seeds(allowed)
    result = NetFuzzResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        rng = random.Random(f"{seed}:{index}")
        tls = Mutator(hellos, _TLS_TOKENS, rng)
        http = Mutator(heads, _HTTP_TOKENS, rng)
        while time.monotonic() < deadline:
            with lock:
                if result.inputs >= inputs:
                    return
                result.inputs += 1
            port = 443 if rng.random() < 0.5 else 80
            data = (tls if port == 443 else http).next()
            reach = _may_reach(data, allowed)
            start = time.monotonic()
            outcome = _exchange(connect, port, data)
            took = time.monotonic() - start
            with lock:
                result.allowed_names += reach
                result.outcomes[outcome] += 1
                result.slowest = max(result.slowest, took)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + REPLY_BOUND + 10)
    return result
