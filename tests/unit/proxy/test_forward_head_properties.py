"""Property tests: proxy.forward_head on built, mutated and random request heads.

Invariants: any bytes give a ForwardRequest or a HeadError (never another exception); what
is accepted names a canonical host and a port in 1-65535 and has at most one framing; a
valid head gives back what it was built from; every smuggling mutation of a valid head
(bare LF, bare CR, obs-fold, a second Content-Length, CL with TE, a NUL) is refused.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.forward_head import ForwardRequest, HeadError, parse_request_head
from rules.names import canonical_hostname

_names = st.from_regex(r"[a-z][a-z0-9-]{0,15}[a-z0-9](\.[a-z][a-z0-9]{0,10}){1,3}", fullmatch=True)
_ports = st.integers(1, 65535)
_paths = st.from_regex(
    r"/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,40}(\?[A-Za-z0-9=&]{0,20})?", fullmatch=True
)
_tokens = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True).filter(
    lambda t: t.lower() not in ("host", "content-length", "transfer-encoding")
)
_values = st.from_regex(r"[!-~]([ -~]{0,30}[!-~])?", fullmatch=True)
_headers = st.lists(st.tuples(_tokens, _values), max_size=8)


def _outcome(data: bytes) -> ForwardRequest | HeadError:
    try:
        req = parse_request_head(data)
    except HeadError as exc:
        assert 400 <= exc.status <= 505
        assert "\n" not in str(exc)
        return exc
    assert 1 <= req.port <= 65535
    assert req.is_ip or canonical_hostname(req.host) == req.host
    assert not (req.chunked and req.content_length is not None)
    assert req.is_connect or req.path.startswith("/")
    return req


def _head(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _outcome(data)


@given(st.binary(max_size=200))
def test_random_tail_after_valid_line(tail: bytes) -> None:
    _outcome(b"GET http://a.example/ HTTP/1.1\r\nHost: a\r\n" + tail + b"\r\n\r\n")


@given(_names, _ports, _paths, _headers)
def test_valid_absolute_form(name: str, port: int, path: str, extra: list[tuple[str, str]]) -> None:
    lines = [f"GET http://{name}:{port}{path} HTTP/1.1", f"Host: {name}"]
    lines += [f"{k}: {v}" for k, v in extra]
    req = _outcome(_head(lines))
    assert isinstance(req, ForwardRequest), req
    assert (req.host, req.port, req.path) == (canonical_hostname(name), port, path)


@given(_names, _ports)
def test_valid_connect(name: str, port: int) -> None:
    req = _outcome(_head([f"CONNECT {name}:{port} HTTP/1.1", f"Host: {name}:{port}"]))
    assert isinstance(req, ForwardRequest), req
    assert (req.host, req.port) == (canonical_hostname(name), port)


_SMUGGLE = [
    lambda h: h.replace(b"\r\nHost", b"\nHost", 1),
    lambda h: h.replace(b"\r\nHost", b"\rHost", 1),
    lambda h: h.replace(b"\r\nHost: ", b"\r\nX: y\r\n Host: ", 1),
    lambda h: h.replace(b"\r\nHost", b"\r\nContent-Length: 1\r\nContent-Length: 2\r\nHost", 1),
    lambda h: h.replace(
        b"\r\nHost", b"\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\nHost", 1
    ),
    lambda h: h.replace(b"\r\nHost: ", b"\r\nHost: \x00", 1),
    lambda h: h.replace(b"\r\nHost", b"\r\nTransfer-Encoding: chunked, identity\r\nHost", 1),
]


@given(_names, _ports, _paths, _headers, st.sampled_from(range(len(_SMUGGLE))))
def test_smuggling_mutations_refused(
    name: str, port: int, path: str, extra: list[tuple[str, str]], which: int
) -> None:
    lines = [f"POST http://{name}:{port}{path} HTTP/1.1", f"Host: {name}"]
    lines += [f"{k}: {v}" for k, v in extra]
    mutated = _SMUGGLE[which](_head(lines))
    assert isinstance(_outcome(mutated), HeadError)


@given(_names, st.integers(min_value=-5, max_value=0) | st.integers(65536, 10**6))
def test_port_out_of_range_refused(name: str, port: int) -> None:
    out = _outcome(_head([f"CONNECT {name}:{port} HTTP/1.1", f"Host: {name}"]))
    assert isinstance(out, HeadError)
