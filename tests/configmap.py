"""A ConfigMap volume laid out as the kubelet lays it out, for the loader and e2e tests.

The kubelet's atomic writer puts each key's file in a timestamped directory, points `..data`
at it and each key's name at `..data/KEY`; an update writes a new timestamped directory,
points `..data_tmp` at it, renames that over `..data` (the one atomic step) and removes the
old directory. The volume's own directory is an emptyDir's (mode 0777), mounted read-only
into the container; files get `defaultMode` (0644), the timestamped directory 0755.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_SERIAL = itertools.count(1)


def _timestamped(root: Path, files: dict[str, str], mode: int) -> str:
    name = f"..2026_12_04_23_00_00.{next(_SERIAL):09d}"
    directory = root / name
    directory.mkdir()
    for key, text in files.items():
        path = directory / key
        path.write_text(text)
        path.chmod(mode)
    directory.chmod(0o755)
    return name


def write_volume(root: Path, files: dict[str, str], mode: int = 0o644) -> None:
    """A fresh volume at `root` (created, mode 0777 as the kubelet's emptyDir wrapper)."""
    root.mkdir(parents=True, exist_ok=True)
    name = _timestamped(root, files, mode)
    (root / "..data").symlink_to(name)
    for key in files:
        (root / key).symlink_to(f"..data/{key}")
    root.chmod(0o777)


def update_volume(root: Path, files: dict[str, str], mode: int = 0o644) -> None:
    """An update of the same keys, swapped in the way the kubelet swaps it."""
    old = os.readlink(root / "..data")
    name = _timestamped(root, files, mode)
    (root / "..data_tmp").symlink_to(name)
    os.rename(root / "..data_tmp", root / "..data")
    shutil.rmtree(root / old)
