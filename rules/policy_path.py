"""Who else can change a policy file: its mode, and every directory its path goes through.

A policy file that group or others can rewrite is no policy; neither is one whose directory
(or the directory of a symlink on the way to it) lets them rename another file into its
place or repoint the symlink. The path is resolved here one name at a time, as the kernel
does, so the check sees every directory a lookup happens in, including the ones symlinks
lead through. A Kubernetes ConfigMap volume is such a chain: `KEY -> ..data/KEY`,
`..data -> ..2026_01_02_03_04_05.123`, files 0644 in a 0755 directory, the volume's own
directory 0777 but mounted read-only, which no one in the container can change.

A directory group or others may write is still safe when it is sticky (as /tmp: only an
entry's owner may rename or remove it) or on a read-only mount. The file's owner and root
are trusted, as they are for the file itself.
"""

from __future__ import annotations

import os
import stat

__all__ = ["MAX_SYMLINKS", "unsafe_path_reason"]

#: The kernel's own limit on symlinks followed in one lookup (ELOOP beyond it).
MAX_SYMLINKS = 40
_GROUP_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


def unsafe_path_reason(path: str, opened: os.stat_result) -> str | None:
    """Why the file at `path` (already opened, `opened` its fstat) is not safe, or None.

    `opened` ties the check to the file actually read: if `path` no longer leads to that
    file (it was swapped between the open and this walk), that is refused too, so a caller
    retries or reports instead of trusting a file this walk never looked at.
    """
    if opened.st_mode & _GROUP_OTHER_WRITE:
        return f"writable by group or others (mode {stat.S_IMODE(opened.st_mode):04o})"
    try:
        final, directories = _resolve(path)
    except OSError as exc:
        return f"cannot check the directories of its path: {exc.strerror or exc}"
    if (final.st_dev, final.st_ino) != (opened.st_dev, opened.st_ino):
        return "changed while it was being read (its path now leads to another file)"
    for directory in directories:
        reason = _directory_reason(directory)
        if reason is not None:
            return reason
    return None


def _resolve(path: str) -> tuple[os.stat_result, list[str]]:
    """The lstat of what `path` finally names and every directory looked up in, in order.

    `current` never contains a symlink (each one met is replaced by its target), so its
    parent is `dirname(current)` and `..` is resolved without another lookup.
    """
    todo = list(reversed(path.split("/")))
    current = "/" if path.startswith("/") else os.getcwd()
    directories: list[str] = []
    followed = 0
    found = os.lstat(current)
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            found = os.lstat(current)
            continue
        if current not in directories:
            directories.append(current)
        candidate = os.path.join(current, name)
        found = os.lstat(candidate)
        if stat.S_ISLNK(found.st_mode):
            followed += 1
            if followed > MAX_SYMLINKS:
                raise OSError(0, f"more than {MAX_SYMLINKS} symlinks")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            todo.extend(reversed(target.split("/")))
            found = os.lstat(current)
            continue
        current = candidate
    return found, directories


def _directory_reason(directory: str) -> str | None:
    info = os.stat(directory)
    if not info.st_mode & _GROUP_OTHER_WRITE or info.st_mode & stat.S_ISVTX:
        return None
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return None
    mode = stat.S_IMODE(info.st_mode)
    return (
        f"its directory {directory} is writable by group or others (mode {mode:04o}), so"
        " they can put another file in its place"
    )
