"""Every corpus case through both engines: via the library and via the `pac-eval` command.

The corpus fixes everything FindProxyForURL can observe (DNS, client address, clock), so a
case either matches byte for byte or the engine is wrong. `pac-eval` runs as real
processes, one per (script, environment) group of cases, several at a time.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest

from pac.engine import ENGINES, PacLoadError, load_engine
from pac.env import PacEnv
from tests.conftest import PAC_CORPUS, REPO
from tests.unit.pac.conftest import CASES, corpus_script


def _env(case: dict[str, Any]) -> PacEnv:
    return PacEnv(
        dns=case["resolve"], my_ip=[case["my_ip"]], now=datetime.fromisoformat(case["now"])
    )


def test_corpus_is_complete() -> None:
    assert len(CASES) == 64
    assert len({c["id"] for c in CASES}) == 64


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_library(engine: str, case: dict[str, Any]) -> None:
    env = _env(case)
    try:
        pac = load_engine(engine, corpus_script(case), env)
    except PacLoadError as exc:
        assert case["expected"] is None, f"does not load: {exc.error}"
        assert exc.error.kind == case["expected_error"]
        return
    with pac:
        result = pac.evaluate(case["url"], case["host"], env)
    if case["expected"] is None:
        assert result.result is None
        assert result.error is not None and result.error.kind == case["expected_error"]
    else:
        assert result.error is None, str(result.error)
        assert result.result == case["expected"]


def _group_key(case: dict[str, Any]) -> tuple:
    return (case["pac"], json.dumps(case["resolve"], sort_keys=True), case["my_ip"], case["now"])


def _run_group(engine: str, cases: list[dict[str, Any]], tmp: str) -> tuple[int, list[str], str]:
    """One pac-eval process for cases sharing script and environment; (status, lines, err)."""
    first = cases[0]
    args = [sys.executable, "-m", "pac.cli", str(PAC_CORPUS / first["pac"]), "--json"]
    args += ["--engine", engine, "--now", first["now"], "--my-ip", first["my_ip"]]
    # The corpus checks answers, not the time bound (the sandbox tests do): a wide bound, so
    # an engine that loads slowly on a loaded machine is not mistaken for a hanging script.
    args += ["--timeout", "20"]
    if not first["resolve"]:
        args.append("--no-dns")
    for name, addrs in first["resolve"].items():
        for addr in [addrs] if isinstance(addrs, str) else addrs:
            args += ["--resolve", f"{name}={addr}"]
    urls = os.path.join(tmp, f"{engine}-{first['id']}.txt")
    with open(urls, "w", encoding="utf-8") as f:
        f.writelines(f"{c['url']} {c['host']}\n" for c in cases)
    args += ["--urls", urls]
    env = dict(os.environ, TZ="UTC", PYTHONPATH=str(REPO))
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_pac_eval_command(engine: str, tmp_path: Any) -> None:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for case in CASES:
        groups.setdefault(_group_key(case), []).append(case)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda g: (g, _run_group(engine, g, str(tmp_path))), groups.values()))
    checked = 0
    for cases, (status, lines, err) in runs:
        loads = all(c.get("expected_error") != "script_error" for c in cases)
        if not loads:
            assert status == 2, err
            assert "does not load" in err and "script_error" in err
            checked += len(cases)
            continue
        fails = any(c["expected"] is None for c in cases)
        assert status == (3 if fails else 0), err
        assert len(lines) == len(cases), err
        for case, line in zip(cases, lines, strict=True):
            out = json.loads(line)
            assert out["url"] == case["url"] and out["host"] == case["host"]
            assert out["result"] == case["expected"], case["id"]
            if case["expected"] is None:
                assert out["error"]["kind"] == case["expected_error"], case["id"]
            else:
                assert out["error"] is None
            if "parsed" in case:
                parsed = ";".join(out["routes"]) or "DIRECT"
                assert parsed.replace("SOCKS4 ", "SOCKS ") == case["parsed"], case["id"]
            checked += 1
    assert checked == len(CASES)
