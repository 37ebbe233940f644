"""The block sentinel check on its own: what counts as naming `reject.docker.internal`."""

from __future__ import annotations

import time

import pytest

from pac.sentinel import REJECT_HOST, names_reject_sentinel


@pytest.mark.parametrize(
    "text",
    [
        REJECT_HOST,
        "PROXY .reject.docker.internal",
        "PROXY *.reject.docker.internal:80",
        "-reject.docker.internal",
        "reject.docker.internal-",
        "reject.docker.internal._",
        "reject.docker.internal.",
        "a.b.reject.docker.internal.example",
        "http://user:pw@reject.docker.internal:3128",
        "\uff52\uff45\uff4a\uff45\uff43\uff54\uff0e\uff44\uff4f\uff43\uff4b\uff45\uff52.internal",
        "reject.doc\u212aer.internal",  # KELVIN SIGN
        "reject.docker.\u0131nternal",  # dotless i
        "reject.docker.\u0130nternal",  # capital I with dot above
        "reject.docker.intern\u0251l",  # Latin alpha
        "\u0280eject.docker.internal",  # small capital R
        "rej\u0435ct.d\u03bfcker.internal",  # Cyrillic ie, Greek omicron
        "\U0001d42beject.docker.internal",  # mathematical bold r
        "\u24e1eject.docker.internal",  # circled r
        "re\u200bject.docker\u200d.internal\ufeff",
        "reject\u3002docker\uff61internal",
        "xn--rject-zwe.docker.internal",  # punycode of a Cyrillic look-alike
        "XN--RJECT-ZWE.docker.internal",
        "xn--reject.docker.internal",  # not valid punycode: read as written
        "%72%65%6a%65%63%74.docker.internal",
        "reject%2edocker%2Einternal",
        "reject%25252edocker.internal",  # triple encoding
        "\\x72eject\\u002edocker\\u{2e}internal",
        "REJECT DOCKER INTERNAL",
        "reject_docker-internal",
    ],
)
def test_names_the_sentinel(text: str) -> None:
    assert names_reject_sentinel(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "DIRECT",
        "PROXY proxy.corp.example:8080",
        "PROXY docker.internal:3128",
        "PROXY reject.docker:3128",
        "PROXY eject.docker.internal:1",
        "PROXY r3ject.docker.internal:1",  # digits are not read as letters
        "http://host.docker.internal:3128",
        "SOCKS5 [2001:db8::1]:1080",
        "%zz%",
        "\\u{110000}",
    ],
)
def test_does_not_name_the_sentinel(text: str) -> None:
    assert not names_reject_sentinel(text)


def test_escape_decoding_is_bounded() -> None:
    dot = "."
    for _ in range(4):
        dot = dot.replace("%", "%25") if "%" in dot else "%2e"
        assert names_reject_sentinel(f"PROXY reject{dot}docker.internal:1"), dot
    # "." encoded seven times needs seven decodings: beyond the bound the text is read as
    # written (no author writes that), and the digits left in it hide the name
    assert not names_reject_sentinel("PROXY reject%" + "25" * 6 + "2edocker.internal:1")


def test_linear_in_the_length_of_hostile_text() -> None:
    # a PAC result can be as long as the engine's memory bound lets it be
    for text in ("%25" * 200_000, "\u00e9\u200b" * 200_000, "xn--a." * 100_000):
        started = time.monotonic()
        assert not names_reject_sentinel(text)
        assert time.monotonic() - started < 5.0
