"""The supervisor shim of the local runtime: ``python -m agents.runtimes.shim <replica dir>``.

One shim runs per agent replica, detached in its own session, so the agent outlives whatever
started it (a Celery worker, the web server, a test). The shim

- rotates ``agent.log`` to ``previous.log`` and starts agentd as its child, output to
  ``agent.log``, with the command line and environment the runtime wrote to ``launch.json``;
- writes agentd's pid to ``pid`` and publishes a ``started`` event;
- kills agentd if its resident memory passes the spec's ``memory_mb`` (publishing ``oom``);
- forwards SIGTERM/SIGINT to agentd, and kills it if it outlives its grace period;
- when agentd ends, writes ``exit.json`` and publishes an ``exited`` event, then exits itself.

Events go to a Redis stream and are best-effort: ``exit.json`` is written first and whatever
reads events also reconciles with the runtime's status. Only the standard library and redis-py
are used here: no Django, no psutil.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import redis

from .base import RuntimeEvent

WATCH_INTERVAL = 0.25
PUBLISH_TIMEOUT = 2.0
PUBLISH_ATTEMPTS = 2
# Written by the runtime just before it stops a replica, so an exit it asked for is not
# mistaken for a crash by whoever reads the events.
STOP_REQUESTED = "stop-requested"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m agents.runtimes.shim <replica dir>", file=sys.stderr)
        return 2
    return Shim(Path(argv[0])).run()


class Shim:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.launch: dict[str, Any] = json.loads((directory / "launch.json").read_text())
        self.slug: str = self.launch["slug"]
        self.replica: int = self.launch["replica"]
        self.child: subprocess.Popen[bytes] | None = None
        self._term_deadline: float | None = None
        self._stop_signal: int | None = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        started = time.time()
        try:
            self.child = self._spawn()
        except OSError as exc:
            self._log("error", "spawn_failed", f"cannot start agentd: {exc}")
            failed = {"exit_code": 127, "signal": None, "error": str(exc)}
            self._finish(failed, pid=None, started=started)
            return 1
        pid = self.child.pid
        _write_json_atomically(self.directory / "pid", pid)
        if self._stop_signal is not None:  # told to stop while agentd was being started
            self._on_stop_signal(self._stop_signal, None)
        self._log("info", "spawned", f"agentd started with pid {pid}", pid=pid)
        self._publish("started", details={"pid": pid, "port": self.launch["port"]})

        returncode, oom = self._supervise(self.child)
        ended: dict[str, Any] = {
            "exit_code": returncode if returncode >= 0 else None,
            "signal": -returncode if returncode < 0 else None,
            "oom": oom,
        }
        self._finish(ended, pid=pid, started=started)
        return 0

    def _supervise(self, child: subprocess.Popen[bytes]) -> tuple[int, bool]:
        """Wait for agentd to end, enforcing its memory limit and its grace period once told to
        stop; answers its return code and whether it was killed for its memory."""
        limit = int(self.launch.get("memory_mb") or 0) * 1024 * 1024
        oom = False
        while True:
            try:
                return child.wait(timeout=WATCH_INTERVAL), oom
            except subprocess.TimeoutExpired:
                pass
            if self._term_deadline is not None and time.monotonic() > self._term_deadline:
                self._log("warning", "grace_expired", "agentd outlived its grace period; killing")
                self._kill_child()
            rss = _resident_bytes(child.pid)
            if not oom and limit and rss is not None and rss > limit:
                oom = True
                message = (
                    f"agentd used {rss // (1024 * 1024)} MiB, over its limit of "
                    f"{limit // (1024 * 1024)} MiB; killing it"
                )
                self._log("error", "oom", message, rss_bytes=rss, limit_bytes=limit)
                self._kill_child()
                self._publish(
                    "oom", details={"pid": child.pid, "rss_bytes": rss, "limit_bytes": limit}
                )

    def _spawn(self) -> subprocess.Popen[bytes]:
        log_path = self.directory / "agent.log"
        if log_path.exists() and log_path.stat().st_size:
            os.replace(log_path, self.directory / "previous.log")
        cwd = Path(self.launch["cwd"])
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                self.launch["argv"],
                cwd=cwd,
                env=self.launch["env"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )

    def _finish(self, exit_info: dict[str, Any], pid: int | None, started: float) -> None:
        ended = time.time()
        requested = (self.directory / STOP_REQUESTED).exists()
        record = {
            **exit_info,
            "at": ended,
            "pid": pid,
            "started_at": started,
            "uptime_seconds": round(ended - started, 3),
            "requested_stop": requested,
        }
        _write_json_atomically(self.directory / "exit.json", record)
        self._log("info", "exited", f"agentd ended: {_describe_exit(exit_info)}", **record)
        details = {
            "pid": pid,
            "port": self.launch["port"],
            "uptime_seconds": record["uptime_seconds"],
            "requested_stop": requested,
            "oom": bool(exit_info.get("oom")),
        }
        if exit_info.get("error"):
            details["error"] = exit_info["error"]
        self._publish(
            "exited",
            exit_code=exit_info.get("exit_code"),
            signal_number=exit_info.get("signal"),
            details=details,
        )

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = signum
        child = self.child
        if child is not None and child.returncode is None:
            try:
                os.kill(child.pid, signum)
                os.kill(child.pid, signal.SIGCONT)  # a paused agent must be able to act on it
            except ProcessLookupError:
                pass
        if self._term_deadline is None:
            self._term_deadline = time.monotonic() + float(self.launch.get("grace_seconds", 10))

    def _kill_child(self) -> None:
        child = self.child
        if child is not None:
            child.kill()  # does nothing once the child has been reaped

    def _publish(
        self,
        kind: str,
        exit_code: int | None = None,
        signal_number: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        events = self.launch.get("events") or {}
        if not events.get("redis_url"):
            return
        event = RuntimeEvent(
            kind=kind,
            slug=self.slug,
            replica=self.replica,
            at=time.time(),
            exit_code=exit_code,
            signal=signal_number,
            details=details or {},
        )
        for attempt in range(PUBLISH_ATTEMPTS):
            client = redis.Redis.from_url(
                events["redis_url"],
                socket_timeout=PUBLISH_TIMEOUT,
                socket_connect_timeout=PUBLISH_TIMEOUT,
            )
            try:
                client.xadd(
                    events["stream"],
                    event.to_fields(),  # type: ignore[arg-type]
                    maxlen=int(events.get("maxlen") or 10_000),
                    approximate=True,
                )
                return
            except (redis.RedisError, OSError) as exc:
                if attempt + 1 == PUBLISH_ATTEMPTS:
                    self._log("warning", "publish_failed", f"cannot publish {kind} event: {exc}")
                else:
                    time.sleep(0.2)
            finally:
                client.close()

    def _log(self, level: str, event: str, message: str, **fields: Any) -> None:
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "slug": self.slug,
            "replica": self.replica,
            "event": event,
            "message": message,
            **fields,
        }
        print(json.dumps(record, default=str), flush=True)


def _describe_exit(exit_info: dict[str, Any]) -> str:
    if exit_info.get("signal"):
        name = signal.Signals(exit_info["signal"]).name
        return f"killed by {name}" + (" (over its memory limit)" if exit_info.get("oom") else "")
    return f"exit code {exit_info.get('exit_code')}"


def _resident_bytes(pid: int) -> int | None:
    """Resident memory of a process from /proc (Linux); None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _write_json_atomically(path: Path, value: object) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
