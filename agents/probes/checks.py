"""One probe of one replica: an HTTP GET, a TCP connection or a command, within its timeout.

HTTP and TCP probes go to the replica on the host's loopback (local agents, and Docker agents
on the host's network or with their port published there), straight, never through a proxy.
An exec probe runs in the agent's own context: on the local runtime with the environment and
working directory agentd was started with (its replica's ``launch.json``), on Docker inside
the container (``docker exec``). Kubernetes agents are probed by the kubelet, not here.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from agents.runtimes import Runtime
from agents.runtimes.local import LocalRuntime
from agents.runtimes.local.files import read_json
from agents.runtimes.ports import HOST


@dataclass(frozen=True)
class CheckResult:
    """Whether one check passed, and if not why, in words that stay the same while the cause
    does (they become the agent's health detail)."""

    ok: bool
    reason: str = ""


PASSED = CheckResult(True)


def run_check(
    probe: dict[str, Any], *, runtime: Runtime, slug: str, replica: int, port: int
) -> CheckResult:
    """Run ``probe`` (a normalized probe of ``agents.probes.schema``) against one replica."""
    timeout = float(probe["timeout_seconds"])
    kind = probe["kind"]
    if kind == "http":
        return http_check(port, probe["path"], probe["status"], timeout)
    if kind == "tcp":
        return tcp_check(probe.get("port") or port, timeout)
    if kind == "exec":
        return exec_check(runtime, slug, replica, probe["command"], timeout)
    return CheckResult(False, f"unknown probe kind {kind!r}")


def http_check(port: int, path: str, expected: int, timeout: float) -> CheckResult:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        status = connection.getresponse().status
    except TimeoutError:
        return CheckResult(False, f"no answer within {timeout:g} s")
    except ConnectionRefusedError:
        return CheckResult(False, "connection refused")
    except (OSError, http.client.HTTPException, ValueError) as error:
        return CheckResult(False, f"the request failed ({type(error).__name__})")
    finally:
        connection.close()
    if status != expected:
        return CheckResult(False, f"answered {status}, expecting {expected}")
    return PASSED


def tcp_check(port: int, timeout: float) -> CheckResult:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return PASSED
    except TimeoutError:
        return CheckResult(False, f"no connection to port {port} within {timeout:g} s")
    except ConnectionRefusedError:
        return CheckResult(False, f"port {port} refused the connection")
    except OSError as error:
        return CheckResult(False, f"port {port}: {error.strerror or type(error).__name__}")


def exec_check(
    runtime: Runtime, slug: str, replica: int, argv: list[str], timeout: float
) -> CheckResult:
    in_container = getattr(runtime, "exec_probe", None)
    if in_container is not None:
        ok, reason = in_container(slug, replica, argv, timeout)
        return CheckResult(ok, reason)
    if isinstance(runtime, LocalRuntime):
        launch = read_json(runtime.layout.replica_dir(slug, replica) / "launch.json", None)
        if not isinstance(launch, dict):
            return CheckResult(False, f"replica {replica} has no launch record to run it with")
        return local_exec(argv, launch.get("env") or {}, launch.get("cwd"), timeout)
    return CheckResult(False, f"the {runtime.name} runtime cannot run exec probes")


def local_exec(
    argv: list[str], env: dict[str, str], cwd: str | None, timeout: float
) -> CheckResult:
    """``argv`` with agentd's environment and working directory; passes on exit status 0."""
    try:
        finished = subprocess.run(
            argv,
            env={str(k): str(v) for k, v in env.items()},
            cwd=cwd or None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            close_fds=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return CheckResult(False, f"did not finish within {timeout:g} s")
    except FileNotFoundError:
        return CheckResult(False, f"{argv[0][:60]!r}: no such program (or no working directory)")
    except OSError as error:
        return CheckResult(False, f"could not run: {error.strerror or error}")
    if finished.returncode != 0:
        return CheckResult(False, f"exited with status {finished.returncode}")
    return PASSED
