"""PAC engine: loading, helper functions, engines, sandboxed evaluation, result parsing.

Knows nothing of sockets or config files, and imports neither `rules/` nor `proxy/`
(a checked rule).
"""
