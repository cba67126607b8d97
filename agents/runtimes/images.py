"""The agent image (``waooaw/agentd:<version>``): building it and finding it in an engine.

The image holds agentd and nothing else of the portal, so the build context is made here, in
memory, from exactly the files ``agents/agentd/Dockerfile`` copies: building does not send
the whole project (virtualenvs, local data) to the engine, and is the same on every
machine whatever a ``.dockerignore`` says.

``manage.py agents build-image [--version V] [--base-image IMG]`` calls
:func:`build_agent_image`; the Docker runtime calls :func:`agent_image_ref` to name the image
an agent's version runs.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import requests

from .base import RuntimeFailure

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "agents/agentd/Dockerfile"
DEFAULT_REPOSITORY = "waooaw/agentd"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
# Labels every agent image carries (set by the Dockerfile from its build arguments: labels
# given to the build call would cost one more build step each).
IMAGE_LABEL = "waooaw.image"
VERSION_LABEL = "waooaw.version"


def connect_engine(base_url: str, timeout: float = 60) -> docker.DockerClient:
    """A client of the engine at ``base_url`` (``unix:///var/run/docker.sock``,
    ``tcp://host:2376``); :class:`RuntimeFailure` ``engine_unreachable`` when none answers.

    The API version is negotiated with the engine, so old and new engines both work.
    """
    try:
        return docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
    except docker.errors.DockerException as error:
        raise engine_unreachable(base_url, error) from error


def engine_unreachable(base_url: str, error: BaseException) -> RuntimeFailure:
    return RuntimeFailure(
        f"no Docker engine answers at {base_url} ({_first_line(error)}). Check that dockerd "
        "runs and that DOCKER_HOST points at it: `DOCKER_HOST=... docker info` must work "
        "for the portal's user.",
        reason="engine_unreachable",
        details={"docker_host": base_url, "error": str(error)[:500]},
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def agent_image_ref(repository: str, version: str) -> str:
    """The image an agent of ``version`` runs: ``<repository>:<version>``, unless
    ``repository`` already names a tag or digest (``registry:5000/agentd:pinned``)."""
    last_part = repository.rsplit("/", 1)[-1]
    if "@" in repository or ":" in last_part:
        return repository
    return f"{repository}:{version}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    """Whether the engine has the image ``ref`` locally (no registry is asked)."""
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    except requests.exceptions.ConnectionError as error:
        raise engine_unreachable(client.api.base_url, error) from error
    return True


def build_context() -> io.BytesIO:
    """A tar of the files the agent Dockerfile needs, laid out as in the project."""
    sources = [DOCKERFILE, "agents/__init__.py"]
    sources += sorted(
        str(path.relative_to(PROJECT_ROOT))
        for path in (PROJECT_ROOT / "agents" / "agentd").glob("**/*.py")
    )
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name in sources:
            data = (PROJECT_ROOT / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            # A fixed time: the same sources give the same layers, so rebuilds hit the cache.
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    archive.seek(0)
    return archive


def build_agent_image(
    client: docker.DockerClient,
    version: str,
    base_image: str = DEFAULT_BASE_IMAGE,
    *,
    repository: str = DEFAULT_REPOSITORY,
    pull: bool = False,
    on_output: Callable[[str], object] | None = None,
) -> str:
    """Build agentd's image on ``base_image`` and tag it ``<repository>:<version>``;
    answers the tag.

    ``pull`` asks the engine to pull a newer ``base_image`` first (off by default: the base
    may exist only locally, as the Debian-built one does). ``on_output`` receives each line of
    the build's output. Raises :class:`RuntimeFailure`: ``image_missing`` when the base image
    is neither local nor pullable, ``bad_config`` for another build failure (with the build's
    last lines), ``engine_unreachable`` when no engine answers.
    """
    tag = agent_image_ref(repository, version)
    output: list[str] = []
    try:
        _image, log = client.images.build(
            fileobj=build_context(),
            custom_context=True,
            dockerfile=DOCKERFILE,
            tag=tag,
            buildargs={"BASE_IMAGE": base_image, "AGENT_VERSION": version},
            pull=pull,
            rm=True,
            forcerm=True,
        )
        for chunk in log:
            line = str(chunk.get("stream") or chunk.get("status") or "").rstrip()
            if line:
                output.append(line)
                if on_output is not None:
                    on_output(line)
    except docker.errors.BuildError as error:
        said = [str(c.get("stream") or c.get("error") or "").rstrip() for c in error.build_log]
        said = [line for line in said if line]
        missing_base = any(
            "pull access denied" in line or "not found" in line or "no such image" in line.lower()
            for line in said[-5:] + [str(error.msg)]
        )
        if missing_base:
            raise RuntimeFailure(
                f"cannot build {tag}: the base image {base_image!r} is not in the engine and "
                "cannot be pulled. Build it (scripts/build-agent-base-image.sh builds "
                "waooaw/agentd-base:bookworm from Debian packages) or pass another --base-image.",
                reason="image_missing",
                details={"image": tag, "base_image": base_image, "log_lines": said[-20:]},
            ) from error
        raise RuntimeFailure(
            f"building {tag} on {base_image} failed: {error.msg}",
            reason="bad_config",
            details={"image": tag, "base_image": base_image, "log_lines": said[-20:]},
        ) from error
    except docker.errors.APIError as error:
        raise RuntimeFailure(
            f"the Docker engine refused to build {tag}: {error.explanation or error}",
            reason="unknown",
            details={"image": tag, "base_image": base_image},
        ) from error
    except (docker.errors.DockerException, requests.exceptions.ConnectionError) as error:
        raise engine_unreachable(client.api.base_url, error) from error
    return tag
