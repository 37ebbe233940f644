"""Reloading a policy file: what is read, what is refused, what the workers are handed."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from proxy import filewatch
from proxy.connection import ProxyContext
from proxy.pac_decider import PacDecider
from proxy.pac_source import UNLOADED, PacSettings, PacSnapshot, PacSource
from proxy.policy_feed import NEW_SOURCE, PolicyFeed
from proxy.reload import ConfigVersion, ReloadState, read_version
from proxy.resolver import NameResolver
from proxy.upstream import ConnectOptions
from proxy.worker_policy import WorkerPolicy
from rules.config import ConfigError
from rules.model import Destination
from tests.unit.waiting import until

PAC = 'function FindProxyForURL(u, h) { return "DIRECT"; }'


def section(**keys: object) -> str:
    return json.dumps({"configurationFileVersion": 2, "containersProxy": keys})


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)
    return path


class Sink:
    """What a feed hands on, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, object]] = []

    async def set_config(self, slot: str, version: ConfigVersion) -> None:
        self.seen.append(("config", slot, version))

    async def set_pac(self, slot: str, snap: PacSnapshot) -> None:
        self.seen.append(("pac", slot, snap))


def no_source(
    version: ConfigVersion, publish: Callable[[PacSnapshot], Awaitable[None]]
) -> PacSource:
    async def valid(_script: str) -> None:
        return None

    cfg = version.cfg
    return PacSource(cfg.pac, cfg.embedded_pac, PacSettings(), valid, publish)


def test_read_version_hashes_the_bytes_it_validated(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", section(exclude=["a.example"]))
    version = read_version(str(path))
    assert version.text == path.read_text()
    assert len(version.sha256) == 64 and version.cfg.exclude_entries == ("a.example",)
    write(path, section(exclude=["a.example"]), mode=0o620)
    with pytest.raises(ConfigError, match="writable by group"):
        read_version(str(path))


async def test_an_invalid_version_changes_nothing_and_the_next_valid_one_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "a.json", section(exclude=["a.example"]))
    first = read_version(str(path))
    sink = Sink()
    results: list[str] = []
    state = ReloadState(str(path), first.sha256)
    state.on_result.append(results.append)
    feed = PolicyFeed("main", first, str(path), sink, no_source, state)
    write(path, section(exclud=[]))
    with caplog.at_level(logging.INFO, logger="airgap.proxy"):
        await feed.reload()
    assert sink.seen == [] and feed.version is first
    assert state.result == "invalid" and "exclud: unknown key" in (state.error or "")
    (line,) = [r.getMessage() for r in caplog.records if "reload" in r.getMessage()]
    assert line.startswith("config reload refused: ") and "exclud" in line
    await feed.reload()  # the same bad file again: refused again, still nothing handed on
    write(path, section(exclude=["b.example"]))
    await feed.reload()
    ((kind, slot, version),) = sink.seen
    assert (kind, slot) == ("config", "main")
    assert isinstance(version, ConfigVersion) and version.cfg.exclude_entries == ("b.example",)
    assert state.sha256 == version.sha256 and state.old_sha256 == first.sha256
    assert results == ["invalid", "invalid", "ok"]
    await feed.reload()
    assert results[-1] == "unchanged" and len(sink.seen) == 1


async def test_a_new_pac_source_is_unloaded_first_an_unchanged_one_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", section(embeddedPac=PAC))
    first = read_version(str(path))
    sink = Sink()
    feed = PolicyFeed("main", first, str(path), sink, no_source)
    write(path, section(embeddedPac=PAC, transparentPorts="*"))
    await feed.reload()
    assert [k for k, _s, _v in sink.seen] == ["config"]  # same script: no PAC message
    write(path, section(embeddedPac=PAC.replace("DIRECT", "PROXY p:1")))
    await feed.reload()
    assert [k for k, _s, _v in sink.seen[1:3]] == ["config", "pac"]
    assert sink.seen[2][2] is NEW_SOURCE  # handed out before the new source's first script
    await until(lambda: len(sink.seen) >= 4, "the new source's script")
    snap = sink.seen[3][2]
    assert isinstance(snap, PacSnapshot) and snap.script is not None and "PROXY p:1" in snap.script
    feed.wake.set()
    await feed._stop_source()


def _ctx(decider: object) -> ProxyContext:
    return ProxyContext(
        decider=decider,  # type: ignore[arg-type]
        transparent_ports=(),
        connect=ConnectOptions(timeout=1, mark=None, ssl_context=None),  # type: ignore[arg-type]
        resolver=NameResolver(),
    )


async def test_the_worker_swaps_policy_and_ports_in_its_context(tmp_path: Path) -> None:
    made: list[PacDecider] = []

    def make(slot: str) -> PacDecider:
        from pac.sandbox import Limits

        made.append(PacDecider(NameResolver(), Limits(), "pacparser", 1))
        return made[-1]

    policy = WorkerPolicy(make)
    a = read_version(str(write(tmp_path / "a.json", section(exclude=["203.0.113.1"]))))
    await policy.set_config("main", a)
    ctx = _ctx(None)
    policy.attach(ctx)
    dest = Destination("203.0.113.1", 443)
    assert ctx.decider.decide_now(dest).action == "DIRECT"  # type: ignore[union-attr]
    b = read_version(
        str(write(tmp_path / "a.json", section(embeddedPac=PAC, transparentPorts="*")))
    )
    await policy.set_config("main", b)
    decision = ctx.decider.decide_now(dest)
    assert decision is not None and decision.action == "REJECT"
    assert "PAC unavailable" in decision.reason  # new source: closed until its script loads
    assert 8080 in ctx.transparent_ports and len(made) == 1
    c = read_version(
        str(write(tmp_path / "a.json", section(embeddedPac=PAC, transparentPorts="80")))
    )
    await policy.set_config("main", c)
    assert len(made) == 1  # same PAC source: the same decider, its script kept
    shadow = read_version(str(write(tmp_path / "s.json", section())))
    await policy.set_config("shadow", shadow)
    assert ctx.shadow is policy.shadow and ctx.shadow is not None
    await policy.aclose()


async def test_the_watch_sees_a_replace_an_edit_a_chmod_a_delete_and_a_symlink_swap(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "v1", tmp_path / "v2"
    for d in (first, second):
        d.mkdir()
        (d / "f.json").write_text(d.name)
    (tmp_path / "..data").symlink_to("v1")
    path = tmp_path / "f.json"
    path.symlink_to("..data/f.json")
    changes = 0

    def changed() -> None:
        nonlocal changes
        changes += 1

    task = asyncio.ensure_future(filewatch.watch(lambda: (str(path),), changed, interval=0.01))

    def swap() -> None:
        (tmp_path / "..tmp").symlink_to("v2")
        os.replace(tmp_path / "..tmp", tmp_path / "..data")

    steps: list[Callable[[], None]] = [
        swap,
        lambda: (second / "f.json").write_text("edited, longer"),
        lambda: (second / "f.json").chmod(0o640),
        lambda: (second / "f.json").unlink(),
    ]
    try:
        for i, step in enumerate(steps, 1):
            step()
            await until(lambda i=i: changes >= i, f"change {i} seen")
    finally:
        task.cancel()
    assert changes == len(steps)


async def test_a_pac_policy_is_in_force_for_a_worker_only_once_it_has_its_script(
    tmp_path: Path,
) -> None:
    """A supervised worker listens on `in_force`: a static policy is in force as soon as it
    is known; a PAC policy once the owner's current snapshot (loaded or not) reached it, so a
    restarted worker never answers "PAC not loaded yet" while the others have the script."""
    from pac.sandbox import Limits

    def make(slot: str) -> PacDecider:
        return PacDecider(NameResolver(), Limits(), "pacparser", 1)

    static = WorkerPolicy(make)
    await static.set_config("main", read_version(str(write(tmp_path / "s.json", section()))))
    assert static.in_force.is_set()
    await static.aclose()
    pac = WorkerPolicy(make)
    text = {"pac": "http://203.0.113.9/p.pac"}
    await pac.set_config("main", read_version(str(write(tmp_path / "p.json", section(**text)))))
    assert pac.ready.is_set() and not pac.in_force.is_set()
    await pac.set_pac("shadow", UNLOADED)
    assert not pac.in_force.is_set(), "the shadow's script is not the enforced one"
    await pac.set_pac("main", UNLOADED)
    assert pac.in_force.is_set()
    await pac.aclose()
