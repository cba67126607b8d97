"""Backups of a Docker agent's data: its named volume, read and written through a short-lived
container of the agent's own image (the engine may have no other image and no registry).

The helper container mounts the volume at ``/data`` and is never given a network. A backup
only reads the volume through the engine's archive API (the helper is not even started); a
restore puts the archive's files beside the data, then starts the helper to move each one into
place with an atomic rename (the same :func:`~agents.runtimes.archives.replace_tree` the local
runtime uses), so an agent running meanwhile sees the old file or the new one, never none.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import tarfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import docker
import docker.errors

from ..archives import (
    STAGING_PREFIX,
    check_archive,
    describe_archive,
    replace_tree,
    write_archive,
)
from ..base import AgentSpec, RuntimeFailure
from .containers import DATA_MOUNT, volume_name
from .resources import Resources

MEMBER_ROOT = re.compile(r"^data(/|$)")
HELPER_TIMEOUT_SECONDS = 120
# What the helper runs to restore: replace_tree's own source, so both runtimes restore alike.
RESTORE_SCRIPT = "\n".join(
    [
        "import json, os, shutil, sys",
        "from pathlib import Path",
        f"STAGING_PREFIX = {STAGING_PREFIX!r}",
        inspect.getsource(replace_tree),
        "print(json.dumps(replace_tree(Path(sys.argv[1]), Path(sys.argv[2]))))",
    ]
)


def backup(resources: Resources, spec: AgentSpec, destination: str) -> dict[str, Any]:
    """Write the agent's volume to the tar.gz ``destination`` (as ``data/...``)."""
    with _helper(resources, spec, read_only=True) as helper:
        chunks, _ = resources.api.get_archive(helper, DATA_MOUNT)
        stream = _ChunkReader(chunks)
        with tarfile.open(fileobj=stream, mode="r|") as source:

            def fill(archive: tarfile.TarFile) -> None:
                for member in source:
                    if member.isfile():
                        archive.addfile(member, source.extractfile(member))
                    elif member.isdir():
                        archive.addfile(member)

            return {"volume": volume_name(spec.slug), **write_archive(destination, fill)}


def restore(resources: Resources, spec: AgentSpec, source: str) -> dict[str, Any]:
    """Make the agent's volume hold exactly the archive's files; the archive is checked whole
    first, so a bad one changes nothing."""
    members = check_archive(source, MEMBER_ROOT)
    staging = f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    payload = _staged_archive(source, members, staging)
    with _helper(
        resources,
        spec,
        read_only=False,
        command=[f"{DATA_MOUNT}/{staging}", DATA_MOUNT],
    ) as helper:
        resources.api.put_archive(helper, DATA_MOUNT, payload)
        resources.api.start(helper)
        result = resources.api.wait(helper, timeout=HELPER_TIMEOUT_SECONDS)
        output = resources.api.logs(helper, stdout=True, stderr=True).decode(errors="replace")
    if result.get("StatusCode") != 0:
        raise RuntimeFailure(
            f"restoring {spec.name}'s data failed inside the helper container (exit status "
            f"{result.get('StatusCode')}); its volume may hold part of the archive. "
            "Restore again once the cause is fixed.",
            reason="unknown",
            details={"output": output[-2000:], "volume": volume_name(spec.slug)},
        )
    moved = _last_json(output)
    return {
        "volume": volume_name(spec.slug),
        **describe_archive(Path(source).expanduser().resolve()),
        "removed": moved.get("removed"),
    }


def _staged_archive(source: str, members: list[tarfile.TarInfo], staging: str) -> bytes:
    """The checked archive again, uncompressed, with ``data/`` renamed to ``staging/``: the
    engine unpacks it beside the data, on the volume itself."""
    buffer = io.BytesIO()
    with (
        tarfile.open(Path(source).expanduser().resolve(), "r:gz") as archive,
        tarfile.open(fileobj=buffer, mode="w") as staged,
    ):
        root = next((m for m in members if m.name.rstrip("/") == "data"), None)
        top = tarfile.TarInfo(staging)
        # Owned like the data directory it stands for, so that the helper (the image's user)
        # can move files out of it; open to all when the archive does not say.
        top.type, top.mode = tarfile.DIRTYPE, 0o755 if root is not None else 0o777
        if root is not None:
            top.uid, top.gid, top.uname, top.gname = root.uid, root.gid, root.uname, root.gname
        staged.addfile(top)
        for member in members:
            if member.name.rstrip("/") == "data":
                continue
            renamed = _copy_info(member, staging + member.name.rstrip("/")[len("data") :])
            staged.addfile(renamed, archive.extractfile(member) if member.isfile() else None)
    return buffer.getvalue()


def _copy_info(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for field in ("size", "mode", "mtime", "type", "uid", "gid", "uname", "gname"):
        setattr(info, field, getattr(member, field))
    return info


@contextmanager
def _helper(
    resources: Resources, spec: AgentSpec, read_only: bool, command: list[str] | None = None
) -> Iterator[str]:
    """A container of the agent's image with its volume at /data, removed afterwards."""
    if resources.volume(spec.slug) is None:
        raise RuntimeFailure(
            f"{spec.name} has no data volume ({volume_name(spec.slug)}); provision it first.",
            reason="not_found",
            details={"volume": volume_name(spec.slug)},
        )
    api = resources.api
    host_config = api.create_host_config(
        binds={volume_name(spec.slug): {"bind": DATA_MOUNT, "mode": "ro" if read_only else "rw"}},
        network_mode="none",
    )
    created = api.create_container(
        _helper_image(resources, spec),
        name=f"waooaw-{spec.slug}-data-{uuid.uuid4().hex[:8]}",
        entrypoint=["python3", "-c", RESTORE_SCRIPT],
        command=command or [],
        host_config=host_config,
        network_disabled=True,
    )
    try:
        yield created["Id"]
    finally:
        with suppress(docker.errors.NotFound):
            api.remove_container(created["Id"], force=True)


def _helper_image(resources: Resources, spec: AgentSpec) -> str:
    """The agent's image of this version, else that of any container of the agent."""
    try:
        return resources.image(spec)[1]
    except RuntimeFailure:
        for inspected in resources.containers(spec.slug).values():
            return str(inspected["Image"])
        raise


def _last_json(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


class _ChunkReader(io.RawIOBase):
    """A file over the engine's archive stream (an iterator of byte chunks)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
