"""The data template: JSON records through a declared pipeline of steps.

A pipeline is a list of steps, each an object with exactly one key: ``select``, ``filter``,
``group_by``, ``count``, ``sort`` or ``limit``. It is data, never code: nothing is evaluated.
Fields may be dotted paths (``user.country``); a record's own key of that exact name wins, so
the fields a ``select`` or ``group_by`` step wrote can be named by later steps.

Comparisons never raise: values of mismatched types (a number and a string, ``true`` and ``1``)
are simply not equal and not ordered, and a missing field matches no condition but
``exists: false``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import checks
from .base import Handler, HandlerContext, Invalid, Settings, Task, TaskError

MAX_STEPS = 50
MAX_FIELD_LENGTH = 200
MAX_SELECTED = 100
MAX_LIMIT = 1_000_000
FILTER_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "exists")
ORDERING_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
}
DEFAULT_MAX_RECORDS = 10_000
MISSING = object()


@dataclass(frozen=True)
class Select:
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class GroupBy:
    field: str
    count_as: str


@dataclass(frozen=True)
class Count:
    pass


@dataclass(frozen=True)
class Sort:
    field: str
    descending: bool


@dataclass(frozen=True)
class Limit:
    count: int


Step = Select | Filter | GroupBy | Count | Sort | Limit


def parse_settings(data: object, *, slug: str) -> dict[str, Any]:
    settings = checks.mapping("settings", data)
    checks.only_known("settings", settings, ("pipeline", "max_records"))
    pipeline = checks.value_of(settings, "pipeline")
    if pipeline is None:
        pipeline = []
    parse_pipeline(pipeline, "settings.pipeline")
    max_records = checks.value_of(settings, "max_records")
    if max_records is None:
        max_records = DEFAULT_MAX_RECORDS
    return {
        # Kept as given (it is checked above): GET /config answers what the operator wrote.
        "pipeline": json.loads(json.dumps(pipeline)),
        "max_records": checks.integer("settings.max_records", max_records, 1, 100_000),
    }


def parse_pipeline(data: object, key: str) -> list[Step]:
    """The steps of a pipeline; :class:`Invalid` names the bad step by its index."""
    steps_data = checks.array(key, data, 0, MAX_STEPS)
    steps = []
    for index, step_data in enumerate(steps_data):
        step_key = f"{key}[{index}]"
        step_object = checks.mapping(step_key, step_data)
        if len(step_object) != 1:
            raise Invalid(
                f"{step_key} must have exactly one key (select, filter, group_by, count, sort "
                f"or limit), got {checks.show(sorted(step_object))}"
            )
        [(kind, argument)] = step_object.items()
        parser = STEP_PARSERS.get(kind)
        if parser is None:
            raise Invalid(
                f"{step_key} is an unknown step {kind!r}; known steps: {', '.join(STEP_PARSERS)}"
            )
        steps.append(parser(f"{step_key}.{kind}", argument))
        if isinstance(steps[-1], Count) and index != len(steps_data) - 1:
            raise Invalid(f"{step_key} is a count step, which must be the last one")
    return steps


def _field(key: str, value: object) -> str:
    return checks.string(key, value, max_length=MAX_FIELD_LENGTH)


def _parse_select(key: str, argument: object) -> Select:
    fields = checks.array(key, argument, 1, MAX_SELECTED)
    return Select(tuple(_field(f"{key}[{index}]", name) for index, name in enumerate(fields)))


def _parse_filter(key: str, argument: object) -> Filter:
    condition = checks.mapping(key, argument)
    checks.only_known(key, condition, ("field", "op", "value"))
    field = _field(f"{key}.field", condition.get("field"))
    op = checks.choice(f"{key}.op", condition.get("op"), FILTER_OPS)
    if op == "exists":
        value = condition.get("value")
        return Filter(field, op, True if value is None else checks.boolean(f"{key}.value", value))
    if "value" not in condition:
        raise Invalid(f"{key}.value is missing: the value the field is compared with")
    value = condition["value"]
    if op == "in" and not isinstance(value, list):
        raise Invalid(f"{key}.value must be a list for op in, got {checks.show(value)}")
    if op in ORDERING_OPS and not (_is_number(value) or isinstance(value, str)):
        raise Invalid(
            f"{key}.value must be a number or a string for op {op}, got {checks.show(value)}"
        )
    return Filter(field, op, value)


def _parse_group_by(key: str, argument: object) -> GroupBy:
    grouping = checks.mapping(key, argument)
    checks.only_known(key, grouping, ("field", "count_as"))
    field = _field(f"{key}.field", grouping.get("field"))
    count_as = grouping.get("count_as")
    count_as = "count" if count_as is None else _field(f"{key}.count_as", count_as)
    if count_as == field:
        raise Invalid(f"{key}.count_as must differ from the field, both are {field!r}")
    return GroupBy(field, count_as)


def _parse_count(key: str, argument: object) -> Count:
    if argument != {}:
        raise Invalid(f"{key} takes no options: write {{}}, got {checks.show(argument)}")
    return Count()


def _parse_sort(key: str, argument: object) -> Sort:
    order = checks.mapping(key, argument)
    checks.only_known(key, order, ("field", "descending"))
    descending = order.get("descending")
    return Sort(
        _field(f"{key}.field", order.get("field")),
        False if descending is None else checks.boolean(f"{key}.descending", descending),
    )


def _parse_limit(key: str, argument: object) -> Limit:
    return Limit(checks.integer(key, argument, 0, MAX_LIMIT))


STEP_PARSERS: dict[str, Callable[[str, object], Step]] = {
    "select": _parse_select,
    "filter": _parse_filter,
    "group_by": _parse_group_by,
    "count": _parse_count,
    "sort": _parse_sort,
    "limit": _parse_limit,
}


class DataHandler(Handler):
    template = "data"

    def __init__(self, settings: Settings, context: HandlerContext) -> None:
        self._pipeline = parse_pipeline(settings["pipeline"], "settings.pipeline")
        self._max_records = settings["max_records"]

    def handle(self, task: Task) -> dict[str, Any]:
        payload = task.payload
        try:
            records = self._records(payload.get("records"))
            steps = self._pipeline
            if payload.get("pipeline") is not None:
                steps = parse_pipeline(payload["pipeline"], "pipeline")
        except Invalid as exc:
            raise TaskError(str(exc)) from exc
        return run_pipeline(records, steps)

    def _records(self, value: object) -> list[Mapping[str, Any]]:
        if value is None:
            raise Invalid("records is missing: the list of JSON objects to transform")
        records = checks.array("records", value, 0, self._max_records)
        for index, record in enumerate(records):
            checks.mapping(f"records[{index}]", record)
        return records


def run_pipeline(records: Sequence[Mapping[str, Any]], steps: Sequence[Step]) -> dict[str, Any]:
    """The output of ``steps`` on ``records``: ``{"records": [...], "count": n}``, or
    ``{"count": n}`` after a count step."""
    current = list(records)
    for step in steps:
        if isinstance(step, Count):
            return {"count": len(current)}
        current = _apply(step, current)
    return {"records": current, "count": len(current)}


def _apply(step: Step, records: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(step, Select):
        return [_selected(record, step.fields) for record in records]
    if isinstance(step, Filter):
        return [record for record in records if _matches(lookup(record, step.field), step)]
    if isinstance(step, GroupBy):
        return _grouped(records, step)
    if isinstance(step, Sort):
        return _sorted(records, step)
    if isinstance(step, Limit):
        return records[: step.count]
    raise AssertionError(f"unhandled step {step!r}")


def lookup(record: Mapping[str, Any], field: str) -> Any:
    """The value of ``field`` in ``record`` (a key of that name, else a dotted path), or
    ``MISSING``."""
    if field in record:
        return record[field]
    value: Any = record
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def _selected(record: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    selected = {}
    for field in fields:
        value = lookup(record, field)
        if value is not MISSING:
            selected[field] = value
    return selected


def _matches(value: Any, condition: Filter) -> bool:
    if condition.op == "exists":
        return (value is not MISSING) == condition.value
    if value is MISSING:
        return False
    if condition.op == "eq":
        return same(value, condition.value)
    if condition.op == "ne":
        return not same(value, condition.value)
    if condition.op == "in":
        return any(same(value, candidate) for candidate in condition.value)
    if condition.op == "contains":
        if isinstance(value, str):
            return isinstance(condition.value, str) and condition.value in value
        if isinstance(value, list):
            return any(same(item, condition.value) for item in value)
        return False
    comparable = (_is_number(value) and _is_number(condition.value)) or (
        isinstance(value, str) and isinstance(condition.value, str)
    )
    return comparable and ORDERING_OPS[condition.op](value, condition.value)


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``, containers compare deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return type(a) is type(b) and bool(a == b)


def _grouped(records: list[Mapping[str, Any]], step: GroupBy) -> list[Mapping[str, Any]]:
    # Keyed by the value's JSON text, so true and 1 (equal in Python) stay two groups.
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        value = lookup(record, step.field)
        if value is MISSING:
            value = None
        group = groups.setdefault(
            json.dumps(value, sort_keys=True), {step.field: value, step.count_as: 0}
        )
        group[step.count_as] += 1
    return list(groups.values())


def _sorted(records: list[Mapping[str, Any]], step: Sort) -> list[Mapping[str, Any]]:
    present = [record for record in records if lookup(record, step.field) is not MISSING]
    missing = [record for record in records if lookup(record, step.field) is MISSING]
    present.sort(key=lambda record: _order(lookup(record, step.field)), reverse=step.descending)
    return present + missing


def _order(value: Any) -> tuple[int, Any]:
    """A sort key that orders any JSON values without comparing mismatched types: numbers,
    then strings, then booleans, then null, then lists and objects by their JSON text."""
    if _is_number(value):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    if isinstance(value, bool):
        return (2, value)
    if value is None:
        return (3, 0)
    return (4, json.dumps(value, sort_keys=True))


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
