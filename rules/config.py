"""Reading admin-settings.json (or a bare `containersProxy` object) into a validated config.

The file is a security boundary: whoever can write it decides where containers may connect.
So it is refused when group or others can write it, refused on anything ambiguous (unknown
keys, duplicate keys, wrong JSON types, unsupported versions), and every refusal is one
message naming the key and what is wrong, because the proxy will not start until it is fixed.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from rules.errors import ConfigError
from rules.exclude import ExcludeMatcher, NamePattern, parse_entry, split_entries
from rules.names import canonical_hostname, is_ip_literal
from rules.policy_path import unsafe_path_reason
from rules.ports import parse_transparent_ports
from rules.proxy_url import ProxyURLError, parse_proxy_url, redact
from rules.settings import EXPECTED, KEYS, ContainersProxyConfig, RawContainersProxy

__all__ = [
    "ConfigError",
    "ContainersProxyConfig",
    "load_config",
    "parse_config_bytes",
    "parse_config_text",
]

SUPPORTED_VERSIONS = (2,)
MAX_FILE_BYTES = 16 * 1024 * 1024
SECTION = "containersProxy"
#: Longest refusal message: values are quoted in them, and a file may hold a huge one.
MAX_MESSAGE = 600
_BOM = "\ufeff"
#: Byte order marks of the encodings a JSON file must not be in (longest first: UTF-32 LE
#: starts with the UTF-16 LE mark).
_FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def load_config(path: str | Path) -> ContainersProxyConfig:
    """Read and validate a config file; ConfigError on any problem, including unsafe modes.

    The checks run on the opened file descriptor, so a file swapped after the check is not
    read. Symlinks are followed (Kubernetes mounts ConfigMaps through them): the modes that
    count are the target's and those of every directory on the way (rules/policy_path.py).
    """
    source = str(path)
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot open config file: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"{source}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        unsafe = unsafe_path_reason(source, st)
        if unsafe is not None:
            raise ConfigError(
                f"{source}: {unsafe}; the policy file is a security boundary: chmod go-w it"
            )
        data = f.read(MAX_FILE_BYTES + 1)
    return parse_config_bytes(data, source)


def parse_config_bytes(data: bytes, source: str) -> ContainersProxyConfig:
    """Validate a config file's bytes (sans-IO): size, encoding, then `parse_config_text`."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES} bytes")
    for bom, encoding in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise ConfigError(
                f"{source}: encoded as {encoding} (byte order mark); save it as UTF-8"
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8 (byte offset {exc.start})") from None
    return parse_config_text(text, source)


def parse_config_text(text: str, source: str) -> ContainersProxyConfig:
    """Validate config text: a whole admin-settings.json or a bare `containersProxy` object.

    Every refusal is a ConfigError of one line, at most MAX_MESSAGE characters: the message
    quotes values from the file, which may be huge or hold control characters.
    """
    try:
        return _parse(text, source)
    except ConfigError as exc:
        raise ConfigError(_bounded(str(exc))) from None


def _bounded(message: str) -> str:
    """One line of bounded length (the key is at the start, so cutting the end keeps it)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... (message cut: {len(message)} characters)"


def _show_key(key: str) -> str:
    """A key from the file as it can be printed: plain names as they are, others quoted
    (escaped: a key may hold newlines, escape sequences or unpaired surrogates) and cut."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    if len(key) > 40:
        return f"{key[:40]!r}... ({len(key)} characters)"
    return repr(key)


def _parse(text: str, source: str) -> ContainersProxyConfig:
    warnings: list[str] = []
    if text.startswith(_BOM):
        text = text[1:]
        warnings.append(f"{source}: UTF-8 byte order mark ignored (JSON files should not have one)")
    doc = _load_json(text, source)
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object at top level, got {_kind(doc)}")
    section, where = _find_section(doc, source)
    _check_duplicates(section, where, source)
    _check_unicode(section, where, source)
    try:
        raw = RawContainersProxy.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(_validation_message(exc, section, where, source)) from None
    return _build(raw, where, source, warnings)


# -- JSON --------------------------------------------------------------------------------


class _Obj(dict[str, Any]):
    """A JSON object that remembers which keys appeared more than once."""

    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # a constant (NaN, Infinity), or an integer of too many digits
        what = "a number has too many digits" if "digits" in str(exc) else str(exc)
        raise ConfigError(f"{source}: invalid JSON: {what}") from None


def _surrogate(text: str) -> str | None:
    """The first unpaired surrogate in `text` (a JSON escape such as \\ud800 decodes to one),
    or None. It is not a character: it cannot be encoded, printed or matched as text."""
    return next((c for c in text if "\ud800" <= c <= "\udfff"), None)


def _check_unicode(section: dict[str, Any], where: str, source: str) -> None:
    """Refuse any key or string in the section that holds an unpaired surrogate, naming the
    key; iterative, because the nesting may be as deep as the JSON decoder allowed."""
    stack: list[tuple[str, Any]] = [(where, section)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                bad = _surrogate(key)
                if bad is not None:
                    raise ConfigError(
                        f"{source}: {path}.{_show_key(key)}: the key holds an unpaired surrogate"
                        f" ({ascii(bad)[1:-1]}), which is not a Unicode character"
                    )
                stack.append((f"{path}.{_show_key(key)}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str):
            bad = _surrogate(value)
            if bad is not None:
                raise ConfigError(
                    f"{source}: {path}: the string holds an unpaired surrogate"
                    f" ({ascii(bad)[1:-1]}), which is not a Unicode character"
                )


def _kind(value: Any) -> str:
    """The JSON type name of a value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _find_section(doc: dict[str, Any], source: str) -> tuple[Any, str]:
    """Locate the containersProxy object; returns it and its path for messages."""
    whole_file = SECTION in doc or "configurationFileVersion" in doc
    if not whole_file:
        if doc and not set(doc) & set(KEYS):
            found = ", ".join(repr(k) if len(k) <= 40 else f"{k[:40]!r}..." for k in list(doc)[:5])
            raise ConfigError(
                f"{source}: no '{SECTION}' object found (top-level keys: {found}; expected an"
                f" admin-settings.json with a '{SECTION}' key, or a bare {SECTION} object"
                f" with keys among {', '.join(KEYS)})"
            )
        return doc, SECTION
    for key in ("configurationFileVersion", SECTION):
        if key in getattr(doc, "duplicates", ()):
            raise ConfigError(f"{source}: key {key!r} appears more than once")
    if "configurationFileVersion" in doc:
        version = doc["configurationFileVersion"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise ConfigError(
                f"{source}: configurationFileVersion: expected the number 2, got {_kind(version)}"
            )
        if version not in SUPPORTED_VERSIONS:
            raise ConfigError(
                f"{source}: configurationFileVersion {version} is not supported (only 2)"
            )
    if SECTION not in doc:
        raise ConfigError(f"{source}: no '{SECTION}' key in this admin-settings.json")
    section = doc[SECTION]
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: {SECTION}: expected an object, got {_kind(section)}")
    return section, SECTION


def _check_duplicates(section: Any, where: str, source: str) -> None:
    dups = getattr(section, "duplicates", [])
    if dups:
        raise ConfigError(f"{source}: {where}.{_show_key(dups[0])}: key appears more than once")


def _validation_message(exc: ValidationError, section: dict[str, Any], where: str, src: str) -> str:
    """Turn pydantic's first error into one sentence about the JSON key."""
    err = exc.errors()[0]
    loc = err["loc"]
    if not loc or not isinstance(loc[0], str):  # not about one key: still one message
        return f"{src}: {where}: {err['msg']}"
    key = loc[0]
    if err["type"] == "extra_forbidden":
        return f"{src}: {where}.{_show_key(key)}: unknown key (allowed: {', '.join(KEYS)})"
    if key not in EXPECTED:
        return f"{src}: {where}.{_show_key(key)}: {err['msg']}"
    if err["type"] == "missing":
        return f"{src}: {where}.{key}: required"
    value = section.get(key)
    index = next((p for p in loc[1:] if isinstance(p, int)), None)
    if index is not None and isinstance(value, list):
        return f"{src}: {where}.{key}[{index}]: expected a string, got {_kind(value[index])}"
    got = _kind(value)
    if key == "mode" and isinstance(value, str):  # quoted, but bounded: the file may be huge
        got = repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"
    hint = ""
    if isinstance(value, dict) and "value" in value:
        hint = (
            f" (per-key {{locked, value}} wrapping is not used inside {SECTION}:"
            f" write the value directly and put 'locked' once in {SECTION})"
        )
    return f"{src}: {where}.{key}: expected {EXPECTED[key]}, got {got}{hint}"


# -- values ------------------------------------------------------------------------------


def _build(
    raw: RawContainersProxy, where: str, source: str, warnings: list[str]
) -> ContainersProxyConfig:
    def fail(key: str, what: str) -> ConfigError:
        return ConfigError(f"{source}: {where}.{key}: {what}")

    def warn(text: str) -> None:
        warnings.append(f"{source}: {where}.{text}")

    routes = {}
    for key in ("http", "https"):
        value = getattr(raw, key).strip()
        try:
            routes[key] = parse_proxy_url(value) if value else None
        except ProxyURLError as exc:
            raise fail(key, str(exc)) from None

    entries = split_entries(raw.exclude)
    parsed = []
    for i, text in enumerate(entries):
        label = f"exclude[{i}]" if isinstance(raw.exclude, list) else "exclude"
        try:
            parsed.append(parse_entry(text))
        except ValueError as exc:
            raise fail(label, str(exc)) from None
        if isinstance(parsed[-1], NamePattern) and parsed[-1].labels_rev == ("*",):
            warn(f"{label}: {text!r} matches every sniffed name (not IP-only connections)")

    try:
        ports = parse_transparent_ports(raw.transparent_ports)
    except ValueError as exc:
        raise fail("transparentPorts", str(exc)) from None
    if ports.is_empty:
        warn("transparentPorts: empty: no connection is subject to the policy")

    pac = raw.pac.strip() or None
    if pac is not None:
        problem = _pac_url_problem(pac)
        if problem:
            raise fail("pac", f"{redact(pac)!r}: {problem}")
    embedded = raw.embedded_pac if raw.embedded_pac.strip() else None
    if embedded is not None and "FindProxyForURL" not in embedded:
        raise fail("embeddedPac", "the script does not define FindProxyForURL")

    if raw.mode == "system":
        for key, present in (
            ("http", raw.http.strip()),
            ("https", raw.https.strip()),
            ("exclude", entries),
            ("pac", pac),
            ("embeddedPac", embedded),
        ):
            if present:
                warn(f"{key}: ignored in system mode (the proxy environment decides)")
    elif embedded is not None or pac is not None:
        for key, present in (
            ("http", raw.http.strip()),
            ("https", raw.https.strip()),
            ("exclude", entries),
        ):
            if present:
                warn(f"{key}: ignored because a PAC is set (bypasses belong in the PAC)")
        if embedded is not None and pac is not None:
            warn("pac: ignored because embeddedPac is set (embeddedPac takes precedence)")

    return ContainersProxyConfig(
        mode=raw.mode,
        http=routes["http"],
        https=routes["https"],
        exclude=ExcludeMatcher(parsed),
        exclude_entries=tuple(entries),
        pac=pac,
        embedded_pac=embedded,
        transparent_ports=ports,
        locked=raw.locked,
        warnings=tuple(warnings),
        source=source,
    )


def _pac_url_problem(url: str) -> str | None:
    """Why a `pac` value is not a usable http(s) URL, file URL or absolute path, or None.

    A plain absolute path is a file PAC, like `file://` (Docker documents `overrideProxyPAC`
    as a file path); both are read with the same checks (a regular file that group and
    others cannot write). A relative path is refused: it would depend on the directory the
    proxy happens to start in.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "control characters in the PAC location"
    if url.startswith("/"):
        return None
    if "://" not in url and not url.lower().startswith("file:"):
        return (
            "a PAC file path must be absolute (/etc/airgap-proxy/proxy.pac);"
            " otherwise expected an http://, https:// or file:/// URL"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            return "a file URL needs an absolute local path (file:///path/proxy.pac)"
        return None
    if scheme not in ("http", "https"):
        return "expected an http://, https:// or file:/// URL"
    host = parts.hostname or ""
    if not host:
        return "no host"
    if not is_ip_literal(host) and canonical_hostname(host) is None:
        return f"bad host {host!r}"
    if port == 0:
        return "port 0 out of range (1-65535)"
    return None
