"""Backups of a local agent's data: every replica's ``data`` directory, kept per replica in one
tar.gz (``replica-<n>/data/...``), and restoring them while the agent runs or not."""

from __future__ import annotations

import re
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Any

from ..archives import (
    STAGING_PREFIX,
    check_archive,
    describe_archive,
    extract,
    replace_tree,
    write_archive,
)
from .files import Layout

MEMBER_ROOT = re.compile(r"^replica-(\d+)/data(/|$)")


def backup(layout: Layout, slug: str, destination: str) -> dict[str, Any]:
    """Write every replica's data directory to the archive ``destination``."""
    replicas = [
        replica
        for replica in layout.replica_numbers(slug)
        if (layout.replica_dir(slug, replica) / "data").is_dir()
    ]

    def fill(archive: tarfile.TarFile) -> None:
        for replica in replicas:
            data = layout.replica_dir(slug, replica) / "data"
            # Files only (a link inside the data is not followed out of it).
            archive.add(data, arcname=f"replica-{replica}/data", recursive=False)
            for path in sorted(data.rglob("*")):
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    continue
                name = f"replica-{replica}/data/{path.relative_to(data).as_posix()}"
                try:
                    archive.add(path, arcname=name, recursive=False)
                except FileNotFoundError:
                    continue  # deleted while we read (a temporary file of the agent's)

    return {**write_archive(destination, fill), "replicas": replicas}


def restore(layout: Layout, slug: str, source: str) -> dict[str, Any]:
    """Make each replica's data directory the archive's, file by file (atomic renames); the
    archive is checked whole first, so a bad one changes nothing."""
    members = check_archive(source, MEMBER_ROOT)
    by_replica: dict[int, list[tarfile.TarInfo]] = {}
    for member in members:
        match = MEMBER_ROOT.match(member.name)
        assert match is not None  # checked above
        by_replica.setdefault(int(match[1]), []).append(member)
    put = removed = 0
    for replica, own in sorted(by_replica.items()):
        replica_dir = layout.replica_dir(slug, replica)
        replica_dir.mkdir(parents=True, exist_ok=True)
        # Beside the data directory: one filesystem, so every file moves by an atomic rename.
        staging = replica_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
        try:
            extract(source, own, staging)
            changed = replace_tree(staging / f"replica-{replica}" / "data", replica_dir / "data")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        put += changed["files"]
        removed += changed["removed"]
    return {
        **describe_archive(Path(source).expanduser().resolve()),
        "replicas": sorted(by_replica),
        "files": put,
        "removed": removed,
    }
