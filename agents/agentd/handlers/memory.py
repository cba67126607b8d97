"""The memory template: keys other agents put, get and forget.

Short-term keys live in the process, each with a time to live, and are gone when the agent
stops. Long-term keys live in files under ``<data dir>/memory/``, one per key (named by the
key's SHA-256, holding the key and its value), written atomically (a temporary file, then
``os.replace``), so they survive restarts and a crash never leaves half a value.

A key put by a task that carries a customer is kept as that customer's (the customer is stored
beside the value), so ``forget_customer`` (the help desk's "clear cache") deletes exactly the
keys of the task's customer, in both scopes, and answers how many. Keys stay one namespace: a
key is the same key whoever reads it, as the agents sharing a memory expect.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from . import checks
from .base import Handler, HandlerContext, Invalid, Settings, Task, TaskError

OPS = ("put", "get", "forget", "keys")
# An operator's op, not one agents use (so not offered in OPS' error message): forget every key
# of the task's customer.
FORGET_CUSTOMER = "forget_customer"
SCOPES = ("short", "long")
MAX_KEY_LENGTH = 200
VALUE_SUFFIX = ".json"
# Written first, then renamed over the value file: never listed as a key.
TEMPORARY_SUFFIX = ".tmp"
DEFAULTS = {"default_ttl_seconds": 300, "max_keys": 10_000, "max_value_bytes": 65_536}
LIMITS = {
    "default_ttl_seconds": (1, 86_400),
    "max_keys": (1, 100_000),
    "max_value_bytes": (1, 1_048_576),
}


def parse_settings(data: object, *, slug: str) -> dict[str, Any]:
    settings = checks.mapping("settings", data)
    checks.only_known("settings", settings, DEFAULTS)
    parsed: dict[str, Any] = dict(DEFAULTS)
    for name, (minimum, maximum) in LIMITS.items():
        value = checks.value_of(settings, name)
        if value is not None:
            parsed[name] = checks.integer(f"settings.{name}", value, minimum, maximum)
    return parsed


class MemoryHandler(Handler):
    template = "memory"

    def __init__(self, settings: Settings, context: HandlerContext) -> None:
        self._default_ttl = settings["default_ttl_seconds"]
        self._max_keys = settings["max_keys"]
        self._max_value_bytes = settings["max_value_bytes"]
        # key -> (monotonic deadline, value as JSON text, customer or ""): a stored value cannot
        # be changed by whoever holds the decoded one.
        self._short: dict[str, tuple[float, str, str]] = {}
        self._directory = context.data_dir / "memory"
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Invalid(
                f"the memory template keeps long-term keys in {self._directory}, which cannot "
                f"be created: {exc.strerror} (the data directory is AGENT_DATA_DIR/--data-dir)"
            ) from exc

    def handle(self, task: Task) -> dict[str, Any]:
        payload = task.payload
        if payload.get("op") == FORGET_CUSTOMER:
            return self._forget_customer(task.customer)
        try:
            op = checks.choice("op", checks.value_of(payload, "op"), OPS)
            scope = checks.choice("scope", payload.get("scope") or "short", SCOPES)
            if op == "keys":
                return {"op": op, "scope": scope, "keys": self._keys(scope)}
            key = _key(payload.get("key"))
        except Invalid as exc:
            raise TaskError(str(exc)) from exc
        if op == "put":
            return self._put(key, scope, payload, task.customer)
        if op == "get":
            found, value = self._get(key, scope)
            return {"op": op, "key": key, "scope": scope, "found": found, "value": value}
        forgotten = self._forget(key, scope)
        return {"op": op, "key": key, "scope": scope, "forgotten": forgotten}

    def _put(self, key: str, scope: str, payload: dict[str, Any], customer: str) -> dict[str, Any]:
        if "value" not in payload:
            raise TaskError("value is missing: put stores the payload's value (any JSON)")
        text = json.dumps(payload["value"], separators=(",", ":"))
        size = len(text.encode())
        if size > self._max_value_bytes:
            raise TaskError(
                f"value is {size} bytes as JSON; max_value_bytes allows {self._max_value_bytes}"
            )
        ttl = payload.get("ttl_seconds")
        if scope == "long":
            if ttl is not None:
                raise TaskError("ttl_seconds applies to short-term keys only (scope short)")
            self._put_long(key, text, customer)
            return {"op": "put", "key": key, "scope": scope, "stored": True}
        try:
            ttl = (
                self._default_ttl if ttl is None else checks.integer("ttl_seconds", ttl, 1, 86_400)
            )
        except Invalid as exc:
            raise TaskError(str(exc)) from exc
        self._drop_expired()
        if key not in self._short and len(self._short) >= self._max_keys:
            raise TaskError(self._full_message("short-term"))
        self._short[key] = (time.monotonic() + ttl, text, customer)
        return {"op": "put", "key": key, "scope": scope, "stored": True, "expires_in_seconds": ttl}

    def _get(self, key: str, scope: str) -> tuple[bool, Any]:
        if scope == "long":
            stored = self._read_long(self._path(key))
            if stored is None:
                return False, None
            return True, stored[1]
        self._drop_expired()
        entry = self._short.get(key)
        if entry is None:
            return False, None
        return True, json.loads(entry[1])

    def _forget(self, key: str, scope: str) -> bool:
        if scope == "long":
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                return False
            return True
        self._drop_expired()
        return self._short.pop(key, None) is not None

    def _forget_customer(self, customer: str) -> dict[str, Any]:
        """Delete every key the customer's tasks put, in both scopes; answers how many."""
        if not customer:
            raise TaskError(
                "forget_customer deletes the keys of the task's customer: send the task with a "
                "customer field"
            )
        self._drop_expired()
        short = [key for key, entry in self._short.items() if entry[2] == customer]
        for key in short:
            del self._short[key]
        long = 0
        for path in self._value_files():
            record = self._read_record(path)
            if record is not None and record.get("customer") == customer:
                path.unlink(missing_ok=True)
                long += 1
        return {
            "op": FORGET_CUSTOMER, "customer": customer, "short": len(short), "long": long,
            "deleted": len(short) + long,
        }  # fmt: skip

    def _keys(self, scope: str) -> list[str]:
        if scope == "short":
            self._drop_expired()
            return sorted(self._short)
        keys = []
        for path in self._value_files():
            stored = self._read_long(path)
            if stored is not None:
                keys.append(stored[0])
        return sorted(keys)

    def _put_long(self, key: str, value_text: str, customer: str) -> None:
        path = self._path(key)
        if not path.exists() and len(self._value_files()) >= self._max_keys:
            raise TaskError(self._full_message("long-term"))
        # The key is stored beside the value: the file name is only its hash.
        owner = f',"customer":{json.dumps(customer)}' if customer else ""
        record = f'{{"key":{json.dumps(key)},"value":{value_text}{owner}}}'
        try:
            descriptor, temporary = tempfile.mkstemp(
                dir=self._directory, prefix=".", suffix=TEMPORARY_SUFFIX
            )
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                    file.write(record)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise TaskError(f"cannot store long-term key {key!r}: {exc.strerror}") from exc

    def _read_long(self, path: Path) -> tuple[str, Any] | None:
        record = self._read_record(path)
        if record is None:
            return None
        return record["key"], record["value"]

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TaskError(f"cannot read long-term value file {path.name}: {exc}") from exc
        return record

    def _value_files(self) -> list[Path]:
        return [
            Path(entry.path)
            for entry in os.scandir(self._directory)
            if entry.name.endswith(VALUE_SUFFIX) and not entry.name.startswith(".")
        ]

    def _path(self, key: str) -> Path:
        return self._directory / (hashlib.sha256(key.encode()).hexdigest() + VALUE_SUFFIX)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for key in [key for key, (deadline, *_) in self._short.items() if deadline <= now]:
            del self._short[key]

    def _full_message(self, scope_name: str) -> str:
        return (
            f"{scope_name} memory holds {self._max_keys} keys already (max_keys); forget one first"
        )


def _key(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY_LENGTH or "\0" in value:
        raise Invalid(
            f"key must be a string of 1 to {MAX_KEY_LENGTH} characters without NUL, "
            f"got {checks.show(value)}"
        )
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise Invalid("key must be valid Unicode text (it holds a lone surrogate)") from exc
    return value
