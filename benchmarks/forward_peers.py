"""The explicit (forward) proxies users would pick instead of ours, for the same-run columns.

tinyproxy and Squid, both Debian packages, configured as plain forward proxies on loopback
with logging and caching off, so what is measured is their proxying: CONNECT tunnels and
absolute-form requests. Each runs in the foreground of a process the suite owns, pinned to
the proxy's core like ours.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks import rig

SQUID_TEMPLATE = """\
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log none
cache deny all
cache_mem 8 MB
http_access allow all
coredump_dir {dir}
workers 1
max_filedescriptors 16384
shutdown_lifetime 0 seconds
logfile_rotate 0
client_persistent_connections on
server_persistent_connections on
"""

TINYPROXY_TEMPLATE = """\
Port {port}
Listen 127.0.0.1
Timeout 60
MaxClients 4096
LogLevel Critical
User nobody
Group nogroup
"""


def squid_binary() -> str | None:
    return shutil.which("squid") or (
        "/usr/sbin/squid" if Path("/usr/sbin/squid").exists() else None
    )


def tinyproxy_binary() -> str | None:
    found = shutil.which("tinyproxy")
    return found or ("/usr/bin/tinyproxy" if Path("/usr/bin/tinyproxy").exists() else None)


def start_squid(
    procs: rig.Processes, placement: rig.Placement, workdir: Path, port: int
) -> rig.Proc:
    binary = squid_binary()
    if binary is None:
        raise rig.RigError("squid is not installed (apt-get install squid)")
    sdir = workdir / "squid"
    sdir.mkdir(exist_ok=True)
    sdir.chmod(0o777)  # squid drops to its own user and writes its pid and log here
    conf = sdir / "squid.conf"
    conf.write_text(SQUID_TEMPLATE.format(port=port, dir=sdir))
    proc = procs.start("squid", [*placement.proxy(), binary, "-N", "-f", str(conf)])
    rig.wait_listening(proc, port)
    return proc


def start_tinyproxy(
    procs: rig.Processes, placement: rig.Placement, workdir: Path, port: int
) -> rig.Proc:
    binary = tinyproxy_binary()
    if binary is None:
        raise rig.RigError("tinyproxy is not installed (apt-get install tinyproxy)")
    conf = workdir / "tinyproxy.conf"
    conf.write_text(TINYPROXY_TEMPLATE.format(port=port))
    proc = procs.start("tinyproxy", [*placement.proxy(), binary, "-d", "-c", str(conf)])
    rig.wait_listening(proc, port)
    return proc


def version(binary: str, flag: str = "-v") -> str:
    out = rig.sh(binary, flag, check=False)
    return out.strip().splitlines()[0] if out.strip() else "unknown version"
