"""What every chart shares: the data types, numbers and units, time ticks, SVG helpers and
downsampling."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from django.utils import timezone
from django.utils.html import escape

SVG_NS = "http://www.w3.org/2000/svg"
PLOT_WIDTH = 1000  # viewBox units across the data area of a line chart
MAX_POINTS = 300  # per series, before downsampling
NO_VALUE = "–"


@dataclass(frozen=True)
class Series:
    """One line: ``points`` are (moment, value) in time order; a None value is a gap."""

    label: str
    points: list[tuple[datetime, float | None]]
    css_class: str = ""


@dataclass(frozen=True)
class Threshold:
    """A horizontal rule across a line chart, e.g. an alert rule's "error rate above 5 %"."""

    value: float
    label: str = ""
    css_class: str = ""


# --- numbers and units ---------------------------------------------------------------------

# Per unit, the scales a value may be shown in: (divisor, suffix), smallest first, and which
# one a zero uses.
_SCALES: dict[str, tuple[list[tuple[float, str]], int]] = {
    "%": ([(1, " %")], 0),
    "ms": ([(1, " ms"), (1000, " s")], 0),
    "s": ([(0.001, " ms"), (1, " s"), (60, " min"), (3600, " h"), (86400, " d")], 1),
    "bytes": (
        [(1, " B"), (1024, " KiB"), (1024**2, " MiB"), (1024**3, " GiB"), (1024**4, " TiB")],
        0,
    ),
    "/s": ([(1, "/s"), (1e3, "k/s"), (1e6, "M/s")], 0),
    "": ([(1, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")], 0),
}
_UNIT_ALIASES = {"B": "bytes", "byte": "bytes", "percent": "%", "per_second": "/s"}


def _scales(unit: str) -> tuple[list[tuple[float, str]], int]:
    unit = _UNIT_ALIASES.get(unit, unit)
    return _SCALES.get(unit, ([(1, f" {unit}")], 0))


def _scale_index(unit: str, magnitude: float) -> int:
    scales, base = _scales(unit)
    if magnitude == 0:
        return base
    index = 0
    for i, (divisor, _) in enumerate(scales):
        if magnitude >= divisor:
            index = i
    return index


def _plain(number: float, decimals: int) -> str:
    text = f"{number:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _significant_decimals(number: float, digits: int = 3) -> int:
    if number == 0:
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(number))))


def format_value(value: float | None, unit: str = "") -> str:
    """``value`` in ``unit``, compact and readable: ``12.5 %``, ``230 MiB``, ``1.2 GiB``,
    ``3.4/s``, ``120 ms``, ``1.5 s``, ``1.2k``. Three significant digits at most; a missing
    value is a dash. Units: ``%``, ``ms``, ``s``, ``bytes`` (alias ``B``), ``/s``, ``""`` for a
    count; any other unit is appended as it is."""
    if value is None or not math.isfinite(value):
        return NO_VALUE
    scales, _ = _scales(unit)
    index = _scale_index(unit, abs(value))
    while True:
        divisor, suffix = scales[index]
        scaled = value / divisor
        decimals = _significant_decimals(scaled)
        rounded = round(abs(scaled), decimals)
        # 999.7 ms rounds to 1000 ms: say 1 s instead.
        if index + 1 < len(scales) and rounded * divisor >= scales[index + 1][0]:
            index += 1
            continue
        return _plain(scaled, decimals) + suffix


def _format_ticks(values: Sequence[float], unit: str) -> list[str]:
    """Labels for axis ticks: one scale and one number of decimals for all of them, the fewest
    that show every tick exactly (0, 0.25, 0.5 rather than 0, 0.3, 0.5)."""
    scales, _ = _scales(unit)
    divisor, suffix = scales[_scale_index(unit, max((abs(v) for v in values), default=0))]
    scaled = [v / divisor for v in values]
    for decimals in range(4):
        if all(abs(round(v, decimals) - v) < 1e-9 * max(1.0, abs(v)) for v in scaled):
            break
    return [_plain(v, decimals) + suffix for v in scaled]


def _nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw))
    for mantissa in (1, 2, 2.5, 5, 10):
        step = mantissa * 10**exponent
        if step >= raw * (1 - 1e-9):
            return step
    return 10 ** (exponent + 1)


def _value_ticks(low: float, high: float, unit: str) -> list[float]:
    """3-5 nice ticks covering ``low`` to ``high`` (in the unit's display scale, so bytes tick
    at 0, 200, 400 MiB rather than at powers of ten of bytes)."""
    if high <= low:
        high = low + (1 if low == 0 else abs(low) * 0.1)
    scales, _ = _scales(unit)
    divisor = scales[_scale_index(unit, max(abs(low), abs(high)))][0]
    step = _nice_step((high - low) / divisor / 4)
    while True:
        first = math.floor(low / divisor / step + 1e-9) * step
        last = math.ceil(high / divisor / step - 1e-9) * step
        count = round((last - first) / step) + 1
        if count <= 5:
            break
        step = _nice_step(step * 1.01)
    ticks = [(first + i * step) * divisor for i in range(count)]
    return [0.0 if abs(tick) < 1e-9 * step * divisor else tick for tick in ticks]


# --- time ------------------------------------------------------------------------------------

_DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
_TIME_STEPS = [
    10, 15, 30, _MINUTE, 5 * _MINUTE, 10 * _MINUTE, 15 * _MINUTE, 30 * _MINUTE,
    _HOUR, 2 * _HOUR, 3 * _HOUR, 6 * _HOUR, 12 * _HOUR, _DAY, 2 * _DAY, 7 * _DAY, 14 * _DAY,
]  # fmt: skip
_MAX_TIME_INTERVALS = 8


def _tz(tz: tzinfo | None) -> tzinfo:
    return tz or timezone.get_current_timezone()


def _time_step(span_seconds: float) -> int:
    for step in _TIME_STEPS:
        if span_seconds / step <= _MAX_TIME_INTERVALS:
            return step
    weeks = math.ceil(span_seconds / (7 * _DAY) / _MAX_TIME_INTERVALS)
    return weeks * 7 * _DAY


def _time_ticks(start: datetime, end: datetime, tz: tzinfo) -> tuple[int, list[datetime]]:
    """Nice moments between ``start`` and ``end``, aligned on the local wall clock (so an
    India-time user sees 06:00, not 05:30)."""
    step = _time_step((end - start).total_seconds())
    local_start = timezone.localtime(start, tz)
    midnight = local_start.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    wall = local_start.replace(tzinfo=None)
    if step < _DAY:
        offset = (wall - midnight).total_seconds()
        moment = midnight + timedelta(seconds=math.ceil(offset / step) * step)
    else:
        moment = midnight if wall == midnight else midnight + timedelta(days=1)
        if step % (7 * _DAY) == 0:  # weeks start on Monday
            moment += timedelta(days=(7 - moment.weekday()) % 7)
    ticks = []
    while True:
        aware = moment.replace(tzinfo=tz)
        if aware > end:
            break
        if aware >= start:
            ticks.append(aware)
        moment += timedelta(seconds=step)
    return step, ticks


def _wall_seconds(moment: datetime, tz: tzinfo) -> int:
    """Seconds since 1970 on the local wall clock: which alternate ticks hide stays stable."""
    wall = timezone.localtime(moment, tz).replace(tzinfo=None)
    return int((wall - datetime(1970, 1, 1)).total_seconds())


def _time_label(moment: datetime, step: int, tz: tzinfo) -> str:
    local = timezone.localtime(moment, tz)
    day = f"{_DAYS[local.weekday()]} {local.day}"
    if step >= 7 * _DAY:
        return f"{local.day} {_MONTHS[local.month - 1]}"
    if step >= _DAY or (step >= _HOUR and local.hour == 0 and local.minute == 0):
        return day
    if step < _MINUTE:
        return f"{local:%H:%M:%S}"
    return f"{local:%H:%M}"


def _moment_text(moment: datetime, tz: tzinfo) -> str:
    local = timezone.localtime(moment, tz)
    return f"{_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} {local:%H:%M}"


# --- shared drawing helpers ------------------------------------------------------------------


def _attrs(**attributes: object) -> str:
    """HTML attributes, escaped; ``class_`` becomes ``class``; None and False are left out."""
    parts = []
    for name, value in attributes.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        parts.append(f'{name}="{escape(str(value))}"')
    return " ".join(parts)


def _tag(name: str, children: str | None = None, **attributes: object) -> str:
    """One element; ``children`` is markup already escaped (None: a self-closing element)."""
    opening = f"<{name} {_attrs(**attributes)}" if attributes else f"<{name}"
    return f"{opening}/>" if children is None else f"{opening}>{children}</{name}>"


def _n(number: float) -> str:
    """A coordinate, short: 12, 12.5, never 12.000001."""
    return _plain(round(number, 1), 1)


def _classes(*names: str) -> str:
    return " ".join(name for name in names if name)


def _runs(points: Iterable[tuple[datetime, float | None]]) -> list[list[tuple[datetime, float]]]:
    """The unbroken stretches between gaps (None values)."""
    runs: list[list[tuple[datetime, float]]] = []
    current: list[tuple[datetime, float]] = []
    for moment, value in points:
        if value is None or not math.isfinite(value):
            if current:
                runs.append(current)
            current = []
        else:
            current.append((moment, float(value)))
    if current:
        runs.append(current)
    return runs


def _downsample_run(run: list[tuple[datetime, float]], budget: int) -> list[tuple[datetime, float]]:
    """At most about ``budget`` points that keep the run's shape: the first and last point and,
    per bucket, the lowest and highest in time order (spikes survive, unlike averaging)."""
    if len(run) <= max(budget, 2):
        return run
    buckets = max(1, (budget - 2) // 2)
    inner = run[1:-1]
    size = len(inner) / buckets
    kept = [run[0]]
    for b in range(buckets):
        chunk = inner[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        low = min(chunk, key=lambda point: point[1])
        high = max(chunk, key=lambda point: point[1])
        kept.extend(sorted({low, high}, key=lambda point: point[0]))
    kept.append(run[-1])
    return kept


def _downsample(
    runs: list[list[tuple[datetime, float]]], limit: int = MAX_POINTS
) -> list[list[tuple[datetime, float]]]:
    total = sum(len(run) for run in runs)
    if total <= limit:
        return runs
    return [_downsample_run(run, max(2, round(limit * len(run) / total))) for run in runs]
