"""Exec probes inside an agent's container (``docker exec``), for the portal's monitor."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import docker
import docker.errors
import requests


def exec_in_container(
    api: docker.APIClient, container: str, argv: Sequence[str], timeout: float
) -> tuple[bool, str]:
    """Run ``argv`` in ``container`` as its image's user, with its environment and working
    directory; passes on exit status 0. A command still running after ``timeout`` seconds
    fails the probe (the engine cannot kill an exec; it ends on its own)."""
    try:
        exec_id = api.exec_create(container, list(argv), stdout=True, stderr=True)["Id"]
    except docker.errors.NotFound:
        return False, f"container {container} not found"
    except docker.errors.APIError as error:
        return False, f"could not run: {error.explanation or error.status_code}"
    except (docker.errors.DockerException, requests.RequestException) as error:
        return False, f"the Docker engine did not answer ({type(error).__name__})"
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            api.exec_start(exec_id)
            outcome["exit_code"] = api.exec_inspect(exec_id).get("ExitCode")
        except Exception as error:  # reported as the probe's failure below
            outcome["error"] = error

    worker = threading.Thread(target=run, name=f"exec-probe-{container}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return False, f"did not finish within {timeout:g} s"
    if "error" in outcome:
        return False, f"could not run: {type(outcome['error']).__name__}"
    code = outcome.get("exit_code")
    if code != 0:
        return False, f"exited with status {code}"
    return True, ""
