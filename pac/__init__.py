"""PAC engine: loading, helper functions, engines, sandboxed evaluation, result parsing.

Knows nothing of sockets or config files, and imports neither `rules/` nor `proxy/`
(a checked rule).
"""

from importlib import metadata as _metadata


def installed_version() -> str:
    """The installed distribution's version, for both commands' `--version` (a checkout run
    without installing has none)."""
    try:
        return _metadata.version("airgap-proxy")
    except _metadata.PackageNotFoundError:
        return "unknown (not installed)"
