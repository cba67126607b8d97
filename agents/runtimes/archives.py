"""Snapshots of an agent's data as tar.gz archives: written atomically, checked whole before
anything is restored from them, and put back file by file without a moment of missing data.

An archive holds only regular files and directories, each under one of the roots its runtime
names (``replica-<n>/data`` for the local runtime, ``data`` for Docker's volume). Anything else
(a link, a device, an absolute path, ``..``) is refused: restoring must not write outside the
agent's data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from .base import RuntimeFailure

CHUNK_BYTES = 1024 * 1024
# Where a restore unpacks before it moves files into place (beside the data: one filesystem,
# so each move is an atomic rename).
STAGING_PREFIX = ".restore-"


def write_archive(destination: str, fill: Callable[[tarfile.TarFile], None]) -> dict[str, Any]:
    """Write the archive ``fill`` adds members to, to the file ``destination`` (its directory
    is created), atomically: a partial archive never has the final name. Answers ``path``,
    ``bytes``, ``sha256`` and ``files`` (regular files in it)."""
    path = Path(destination).expanduser().resolve()
    if path.is_dir():
        raise RuntimeFailure(
            f"{path} is a directory; give the backup archive's file name (e.g. data.tar.gz).",
            reason="bad_config",
            details={"path": str(path)},
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with tarfile.open(partial, "w:gz") as archive:
            fill(archive)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return describe_archive(path)


def describe_archive(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    with tarfile.open(path, "r:gz") as archive:
        files = sum(1 for member in archive if member.isfile())
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
        "files": files,
    }


def check_archive(source: str, root: re.Pattern[str]) -> list[tarfile.TarInfo]:
    """The members of the archive at ``source``, each checked to be a regular file or a
    directory under a root ``root`` matches (its first one or two path parts); the whole
    archive is read, so a truncated or damaged one is refused here, before anything changes."""
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise RuntimeFailure(
            f"no backup archive at {path}; give the path backup_data wrote.",
            reason="not_found",
            details={"path": str(path)},
        )
    try:
        with gzip.open(path, "rb") as stream:  # checks the gzip CRC and length at its end
            while stream.read(CHUNK_BYTES):
                pass
        with tarfile.open(path, "r:gz") as archive:
            members = []
            for member in archive:
                _check_member(path, member, root)
                if member.isfile():
                    content = archive.extractfile(member)
                    while content is not None and content.read(CHUNK_BYTES):
                        pass
                members.append(member)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise RuntimeFailure(
            f"{path} is not a readable tar.gz backup archive ({error}); it is damaged or not "
            "a backup. Nothing was restored.",
            reason="bad_config",
            details={"path": str(path), "error": str(error)[:300]},
        ) from error
    return members


def _check_member(path: Path, member: tarfile.TarInfo, root: re.Pattern[str]) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    normal = posixpath.normpath(name)
    inside = (
        not name.startswith("/")
        and ".." not in parts
        and normal == name.rstrip("/").removeprefix("./")
        and root.match(normal) is not None
    )
    if not inside:
        raise RuntimeFailure(
            f"{path} holds {name!r}, a path outside the agent's data directory; nothing was "
            "restored.",
            reason="bad_config",
            details={"path": str(path), "member": name},
        )
    if not (member.isfile() or member.isdir()):
        raise RuntimeFailure(
            f"{path} holds {name!r}, which is not a regular file or directory (links and "
            "devices are refused); nothing was restored.",
            reason="bad_config",
            details={"path": str(path), "member": name},
        )


def extract(source: str, members: list[tarfile.TarInfo], directory: Path) -> None:
    """Unpack the checked ``members`` of ``source`` under ``directory``."""
    with tarfile.open(Path(source).expanduser().resolve(), "r:gz") as archive:
        archive.extractall(directory, members=members, filter="data")


def replace_tree(staging: Path, target: Path) -> dict[str, int]:
    """Make ``target`` hold exactly the files of ``staging``, one atomic rename per file (a
    reader sees the old file or the new one, never none), then delete ``staging``. Directories
    are kept in place: a process working in one keeps it. Answers the files put and removed."""
    target.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    put = 0
    for directory, _subdirectories, files in os.walk(staging):
        relative = Path(directory).relative_to(staging)
        (target / relative).mkdir(parents=True, exist_ok=True)
        wanted.add(relative)
        for name in files:
            os.replace(Path(directory) / name, target / relative / name)
            wanted.add(relative / name)
            put += 1
    removed = 0
    for directory, _subdirectories, files in os.walk(target, topdown=False):
        relative = Path(directory).relative_to(target)
        if relative.parts and relative.parts[0].startswith(STAGING_PREFIX):
            continue
        for name in files:
            if relative / name not in wanted:
                (Path(directory) / name).unlink(missing_ok=True)
                removed += 1
        if relative not in wanted and relative != Path("."):
            shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    return {"files": put, "removed": removed}
