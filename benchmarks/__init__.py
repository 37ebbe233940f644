"""The benchmark suite: `python3 benchmarks/run.py [--quick] [--json FILE]` (as root).

It is a package so the runner, the origin servers and the load generator share one set of
constants (addresses, ports, the load group) without importing anything from `tests/`.
"""
