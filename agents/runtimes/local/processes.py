"""Processes and ports on this machine, through psutil: liveness, signals, waiting."""

from __future__ import annotations

import contextlib
import socket
import time

import psutil

# Agents listen on loopback only: the portal (and nothing else) reaches them here.
HOST = "127.0.0.1"


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As agentd binds: a connection of a previous run in TIME_WAIT must not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def has_flag(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(argv, argv[1:], strict=False))


def process_from_pid(pid: int | None) -> psutil.Process | None:
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return None
    return process if alive(process) else None


def alive(process: psutil.Process) -> bool:
    """Running or paused; a zombie has ended (it only waits for its parent to notice)."""
    try:
        return process.is_running() and process.status() not in (
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        return False


def status_of(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.Error:
        return psutil.STATUS_DEAD


def create_time(process: psutil.Process) -> float | None:
    try:
        return process.create_time()
    except psutil.Error:
        return None


def send(process: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.Error):
        process.send_signal(signum)


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended (zombies count as ended); answers those left."""
    deadline = time.monotonic() + timeout
    left = [p for p in processes if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left


def wait_for_pause(process: psutil.Process, paused: bool, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (status_of(process) == psutil.STATUS_STOPPED) == paused or not alive(process):
            return
        time.sleep(0.01)
