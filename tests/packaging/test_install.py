"""Installing the distribution the Python way, as a person without root would.

An ordinary user (uid `nobody` here) builds and installs a checkout owned by root that they
cannot write into a venv of their own, with pip, offline from the wheels `./dev.sh test`
downloaded. The build backend must write nothing into the source tree, and the installed
commands must work from that venv alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

WHEELHOUSE = REPO / ".venv" / "wheelhouse"
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
PAC = 'function FindProxyForURL(url, host) { return "PROXY p.example:3128; DIRECT"; }\n'
# What a build reads: everything else in the checkout is not part of the wheel.
SOURCES = ("pyproject.toml", "LICENSE", "README.md", "docs", "pac", "rules", "proxy")


def _version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mode) for p in root.rglob("*"))


def _base_python() -> str:
    """The interpreter the test venv was made from: the one a user would run `venv` with."""
    return str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())


def _as_nobody(
    home: Path, *cmd: str, stdin: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(home.parent / "wheels"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    return subprocess.run(
        [*AS_NOBODY, *cmd],
        env=env,
        cwd=home,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def layout() -> Iterator[Path]:
    """/tmp/X (0755, root): src/ (root-owned, read-only), wheels/ (read-only), home/ (nobody's).

    Not pytest's tmp_path: it lives under a root-only directory the user could not enter.
    """
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as an ordinary user")
    if not WHEELHOUSE.is_dir():
        pytest.skip("no .venv/wheelhouse: run the tests through ./dev.sh test")
    probe = subprocess.run(
        [*AS_NOBODY, _base_python(), "-c", "import venv, ensurepip"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"an ordinary user cannot make a venv with {_base_python()}")
    top = Path(tempfile.mkdtemp(prefix="airgap-install-"))
    try:
        top.chmod(0o755)
        src = top / "src"
        src.mkdir()
        for name in SOURCES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, src / name)
        shutil.copytree(WHEELHOUSE, top / "wheels")
        for root in (src, top / "wheels"):
            for p in [root, *root.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
        home = top / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        yield top
    finally:
        for p in [top, *top.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755 if p.is_dir() else 0o644)
        shutil.rmtree(top)


def test_ordinary_user_pip_installs_a_read_only_checkout_into_a_venv(layout: Path) -> None:
    src, home = layout / "src", layout / "home"
    before = _tree(src)
    venv = home / "venv"

    made = _as_nobody(home, _base_python(), "-m", "venv", str(venv))
    assert made.returncode == 0, made.stderr
    installed = _as_nobody(home, str(venv / "bin" / "pip"), "install", str(src))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert _tree(src) == before, "the build wrote into the source tree"

    version = _as_nobody(home, str(venv / "bin" / "airgap-proxy"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"airgap-proxy {_version()}"

    evaluated = _as_nobody(
        home, str(venv / "bin" / "pac-eval"), "-", "example.com:443", "--no-dns", stdin=PAC
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.strip() == "PROXY p.example:3128; DIRECT"

    # The code it runs is the venv's copy, not the checkout's, and the licence came along.
    where = _as_nobody(
        home, str(venv / "bin" / "python"), "-c", "import proxy, pac, rules; print(proxy.__file__)"
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    site = next(venv.glob("lib/python*/site-packages"))
    licences = list(site.glob("airgap_proxy-*.dist-info/licenses/LICENSE"))
    assert len(licences) == 1
    assert "Apache License" in licences[0].read_text()


def test_python_m_runs_both_commands() -> None:
    for module, prog in (("proxy", "airgap-proxy"), ("pac", "pac-eval")):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {prog}")


def test_airgap_proxy_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("airgap-proxy ")
