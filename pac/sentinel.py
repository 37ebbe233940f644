"""Does a piece of policy text name the block sentinel `reject.docker.internal`?

Docker's convention: a PAC entry naming `reject.docker.internal` means "block". An author who
wrote it meant block however it came out spelled, so this answers yes whenever the text
contains the sentinel after every disguise we can undo, and errs towards yes: a false yes
costs a REJECT, a false no a connection the author meant to forbid (an entry that is not a
valid route is dropped, and the list goes on to the next entry, often DIRECT).

What is undone, in order, on each spelling of the text:

* escapes, up to `_DECODE_ROUNDS` times (so double encoding is undone too): percent-encoding
  (`%72eject`, `reject%2Edocker`) and JavaScript/C escapes left in the string as text
  (`\\x72`, `\\u0072`, `\\u{72}`);
* Unicode: compatibility forms and case (NFKD, then case folding: fullwidth letters, KELVIN
  SIGN, long s, ligatures, mathematical and circled letters, `İ`), accents and other
  combining marks, and a short table of look-alike letters that no normalisation folds
  (dotless `ı`, Cyrillic, Greek and small-capital forms of the sentinel's letters);
* IDNA A-labels (`xn--...`) are decoded, so a look-alike written as punycode folds too
  (the text is checked both with and without this step);
* finally everything but ASCII letters and digits is dropped: dots, trailing dots, dashes,
  underscores, spaces, zero-width and other invisible characters, ports, brackets,
  keywords' separators. What is left must not contain `rejectdockerinternal`.

So a subdomain (`a.reject.docker.internal`), a longer name (`reject.docker.internal.example`),
a leading `.` or `*.`, junk on either side and `reject-docker_internal` all count. Digits are
never read as letters (`r3ject` is another word, not a disguise).

Pure and linear in the text's length (each decoding round is, and rounds are bounded).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

#: The sentinel host (Docker Desktop's convention).
REJECT_HOST = "reject.docker.internal"

_NEEDLE = "rejectdockerinternal"
#: Escape decoding is repeated at most this many times (double, triple encoding...).
_DECODE_ROUNDS = 4
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\u\{([0-9a-fA-F]{1,6})\}")
#: An A-label as a whole label; longer ones are no DNS label and are not decoded.
_A_LABEL = re.compile(r"(?<![a-z0-9-])xn--([a-z0-9-]{1,59})(?![a-z0-9-])")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

#: Letters that look like the sentinel's letters (a c d e i j k l n o r t) and that neither
#: NFKD nor case folding turns into them. Applied after folding, so lower case suffices.
_LOOKALIKES = str.maketrans(
    {
        # Latin
        "\N{LATIN SMALL LETTER DOTLESS I}": "i",
        "\N{LATIN SMALL LETTER DOTLESS J}": "j",
        "\N{LATIN SMALL LETTER L WITH STROKE}": "l",
        "\N{LATIN SMALL LETTER D WITH STROKE}": "d",
        "\N{LATIN SMALL LETTER IOTA}": "i",
        "\N{LATIN LETTER SMALL CAPITAL I}": "i",
        "\N{LATIN LETTER SMALL CAPITAL R}": "r",
        "\N{LATIN SMALL LETTER R WITH FISHHOOK}": "r",
        "\N{LATIN LETTER SMALL CAPITAL L}": "l",
        "\N{LATIN LETTER SMALL CAPITAL N}": "n",
        "\N{LATIN LETTER SMALL CAPITAL A}": "a",
        "\N{LATIN LETTER SMALL CAPITAL C}": "c",
        "\N{LATIN LETTER SMALL CAPITAL D}": "d",
        "\N{LATIN LETTER SMALL CAPITAL E}": "e",
        "\N{LATIN LETTER SMALL CAPITAL J}": "j",
        "\N{LATIN LETTER SMALL CAPITAL K}": "k",
        "\N{LATIN LETTER SMALL CAPITAL O}": "o",
        "\N{LATIN LETTER SMALL CAPITAL T}": "t",
        "\N{LATIN SMALL LETTER ALPHA}": "a",
        "\N{LATIN SMALL LETTER OPEN E}": "e",
        "\N{LATIN SMALL LETTER OPEN O}": "c",
        # Cyrillic
        "\N{CYRILLIC SMALL LETTER A}": "a",
        "\N{CYRILLIC SMALL LETTER ES}": "c",
        "\N{CYRILLIC SMALL LETTER KOMI DE}": "d",
        "\N{CYRILLIC SMALL LETTER IE}": "e",
        "\N{CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I}": "i",
        "\N{CYRILLIC SMALL LETTER PALOCHKA}": "l",
        "\N{CYRILLIC SMALL LETTER JE}": "j",
        "\N{CYRILLIC SMALL LETTER KA}": "k",
        "\N{CYRILLIC SMALL LETTER O}": "o",
        "\N{CYRILLIC SMALL LETTER GHE}": "r",
        "\N{CYRILLIC SMALL LETTER TE}": "t",
        "\N{CYRILLIC SMALL LETTER PE}": "n",
        # Greek
        "\N{GREEK SMALL LETTER ALPHA}": "a",
        "\N{GREEK SMALL LETTER EPSILON}": "e",
        "\N{GREEK SMALL LETTER IOTA}": "i",
        "\N{GREEK SMALL LETTER KAPPA}": "k",
        "\N{GREEK SMALL LETTER OMICRON}": "o",
        "\N{GREEK SMALL LETTER TAU}": "t",
        "\N{GREEK LUNATE SIGMA SYMBOL}": "c",
        "\N{GREEK LETTER YOT}": "j",
        "\N{GREEK SMALL LETTER ETA}": "n",
    }
)


def names_reject_sentinel(text: str) -> bool:
    """True when `text` contains `reject.docker.internal` in any spelling (module docstring)."""
    if not isinstance(text, str):
        return False
    spelling = text
    for _ in range(_DECODE_ROUNDS + 1):
        if any(_NEEDLE in squashed for squashed in _squashed(spelling)):
            return True
        decoded = _decode_escapes(spelling)
        if decoded == spelling:
            return False
        spelling = decoded
    return False


def _decode_escapes(text: str) -> str:
    """One round of percent and backslash escape decoding (undecodable bytes: U+FFFD)."""
    if "%" in text:
        text = unquote(text, errors="replace")
    if "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    return text


def _unescape(m: re.Match[str]) -> str:
    code = int(next(g for g in m.groups() if g is not None), 16)
    return chr(code) if code <= 0x10FFFF else "\ufffd"


def _fold(text: str) -> str:
    """Compatibility-decomposed, case-folded, without marks, look-alikes mapped."""
    if text.isascii():
        return text.lower()
    text = unicodedata.normalize("NFKD", text).casefold()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.category(c).startswith("M"))
    return text.translate(_LOOKALIKES)


def _squashed(text: str) -> tuple[str, ...]:
    """The text folded and reduced to ASCII letters and digits; when it has A-labels, also
    with them decoded (both: decoding must not hide a sentinel that follows `xn--`)."""
    folded = _fold(text)
    out: tuple[str, ...] = (_NOT_ALNUM.sub("", folded),)
    if "xn--" in folded:
        out += (_NOT_ALNUM.sub("", _A_LABEL.sub(_decode_a_label, folded)),)
    return out


def _decode_a_label(m: re.Match[str]) -> str:
    try:
        return _fold(m.group(1).encode("ascii").decode("punycode"))
    except (UnicodeError, ValueError):
        return m.group(0)
