"""The policy file's path check: a ConfigMap's symlink chain passes, a swappable file not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rules import policy_path
from rules.config import ConfigError, load_config
from rules.policy_path import unsafe_path_reason
from tests.configmap import update_volume, write_volume

POLICY = '{"containersProxy": {"mode": "manual", "exclude": ["%s"], "transparentPorts": "80"}}'
KEY = "admin-settings.json"


def volume(tmp_path: Path, root_mode: int = 0o755, file_mode: int = 0o644) -> Path:
    """A ConfigMap volume; its root 0755 here, since no read-only mount is made."""
    root = tmp_path / "etc-airgap-proxy"
    write_volume(root, {KEY: POLICY % "a.example"}, file_mode)
    root.chmod(root_mode)
    return root


def reason(path: Path | str) -> str | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        return unsafe_path_reason(str(path), os.fstat(fd))
    finally:
        os.close(fd)


def test_configmap_layout_is_accepted_and_follows_a_swap(tmp_path: Path) -> None:
    root = volume(tmp_path)
    assert (root / KEY).is_symlink() and (root / "..data").is_symlink()
    assert load_config(root / KEY).exclude.entries[0].entry == "a.example"
    update_volume(root, {KEY: POLICY % "b.example"})
    root.chmod(0o755)
    assert load_config(root / KEY).exclude.entries[0].entry == "b.example"


def test_sticky_world_writable_directory_is_accepted(tmp_path: Path) -> None:
    root = volume(tmp_path, root_mode=0o1777)
    assert reason(root / KEY) is None


def test_world_writable_volume_directory_refused_when_not_read_only(tmp_path: Path) -> None:
    # the kubelet's own mode for a volume's directory: safe only because it is mounted
    # read-only; writable, anyone could repoint `..data` or the key's symlink
    root = volume(tmp_path, root_mode=0o777)
    with pytest.raises(ConfigError) as info:
        load_config(root / KEY)
    assert f"its directory {root} is writable by group or others (mode 0777)" in str(info.value)


def test_world_writable_directory_accepted_on_a_read_only_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = volume(tmp_path, root_mode=0o777)
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path: str) -> None:
            self.f_flag = real(path).f_flag | (os.ST_RDONLY if path == str(root) else 0)

    monkeypatch.setattr(policy_path.os, "statvfs", ReadOnly)
    assert reason(root / KEY) is None


def test_writable_file_in_the_configmap_is_refused(tmp_path: Path) -> None:
    root = volume(tmp_path, file_mode=0o666)
    with pytest.raises(ConfigError, match=r"writable by group or others \(mode 0666\)"):
        load_config(root / KEY)


def test_group_writable_timestamped_directory_is_refused(tmp_path: Path) -> None:
    root = volume(tmp_path)
    data = root / os.readlink(root / "..data")
    data.chmod(0o775)
    assert reason(root / KEY) == (
        f"its directory {data} is writable by group or others (mode 0775), so they can"
        " put another file in its place"
    )


def test_safe_file_behind_a_symlink_in_a_writable_directory_is_refused(tmp_path: Path) -> None:
    # the file itself is 0644 in a 0755 directory; the link to it is in a 0777 one, where
    # anyone may point it elsewhere
    safe = tmp_path / "safe"
    safe.mkdir()
    (safe / KEY).write_text(POLICY % "a.example")
    (safe / KEY).chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / KEY).symlink_to(safe / KEY)
    with pytest.raises(ConfigError, match=f"its directory {shared} is writable"):
        load_config(shared / KEY)
    assert load_config(safe / KEY).exclude.entries[0].entry == "a.example"


def test_file_in_a_writable_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / KEY).write_text(POLICY % "a.example")
    (shared / KEY).chmod(0o644)
    shared.chmod(0o777)
    assert "writable by group or others (mode 0777)" in (reason(shared / KEY) or "")


def test_relative_path_with_dot_dot_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = volume(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert reason(f"../{root.name}/./{KEY}") is None
    root.chmod(0o777)
    assert "writable" in (reason(f"../{root.name}/{KEY}") or "")


def test_absolute_symlink_target(tmp_path: Path) -> None:
    root = volume(tmp_path)
    link = tmp_path / "link.json"
    link.symlink_to(root / KEY)
    assert reason(link) is None


def test_a_path_that_leads_elsewhere_than_the_opened_file_is_refused(tmp_path: Path) -> None:
    root = volume(tmp_path)
    other = tmp_path / "other.json"
    other.write_text("{}")
    fd = os.open(other, os.O_RDONLY)
    try:
        assert "changed while it was being read" in (
            unsafe_path_reason(str(root / KEY), os.fstat(fd)) or ""
        )
    finally:
        os.close(fd)


def test_symlink_chain_longer_than_the_kernel_allows_is_refused(tmp_path: Path) -> None:
    root = volume(tmp_path)
    target = root / KEY
    fd = os.open(target, os.O_RDONLY)
    links = tmp_path / "links"
    links.mkdir()
    previous = target
    for i in range(policy_path.MAX_SYMLINKS + 1):
        link = links / f"l{i}"
        link.symlink_to(previous)
        previous = link
    try:
        assert "more than 40 symlinks" in (unsafe_path_reason(str(previous), os.fstat(fd)) or "")
    finally:
        os.close(fd)
