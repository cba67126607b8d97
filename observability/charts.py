"""Server-rendered SVG charts for the observability pages: line charts, sparklines and the
agent dependency graph, plus the number formatters they label themselves with.

Pure Python on purpose: no JavaScript charting library, no models. Colours come from CSS
(``static/observability/charts.css``) through ``currentColor`` and the portal's theme
variables, so one rendering serves the dark and the light theme.

How a line chart stays crisp at any width: the outer ``<svg>`` has no viewBox, so its user units
are CSS pixels and its text is never stretched; horizontal positions of labels and gridlines are
percentages of its width. Only the data sits in a nested ``<svg>`` whose viewBox is 1000 units
wide and exactly as tall as the plot in pixels, stretched horizontally with
``preserveAspectRatio="none"``; its strokes are non-scaling, so lines keep their width too.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

__all__ = [
    "Node",
    "Series",
    "Threshold",
    "dependency_graph",
    "dependency_graph_node",
    "format_value",
    "line_chart",
    "sparkline",
]

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


@dataclass(frozen=True)
class Node:
    """One agent in the dependency graph. ``state`` and ``health`` are the model's values
    (``RUNNING``, ``healthy``); ``tier`` is ``platform`` or ``customer``."""

    slug: str
    name: str
    state: str
    tier: str = ""
    health: str = ""


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


# --- line chart ------------------------------------------------------------------------------

_PLOT_TOP = 16  # room for the top tick's label, which sits above its gridline
_AXIS_HEIGHT = 22  # the time labels under the plot
_PLOT_PAD = 4  # the data area reaches this far past the plot, so a stroke at the edge shows whole
_DEFAULT_SERIES = 5  # series-1 .. series-5 cycle when a series names no class


def _as_threshold(item: Threshold | float | tuple) -> Threshold:
    if isinstance(item, Threshold):
        return item
    if isinstance(item, tuple):
        return Threshold(*item)
    return Threshold(float(item))


@dataclass(frozen=True)
class _Frame:
    """Where a line chart's values and moments land. x is in the data area's 0-1000 units, y in
    pixels from the top of the plot."""

    start: datetime
    end: datetime
    low: float
    high: float
    plot_height: float

    def x(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds()
        return PLOT_WIDTH * (moment - self.start).total_seconds() / span

    def y(self, value: float) -> float:
        return self.plot_height * (1 - (value - self.low) / ((self.high - self.low) or 1.0))


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str,
    start: datetime,
    end: datetime,
    height: int = 180,
    y_min: float | None = None,
    y_max: float | None = None,
    thresholds: Iterable[Threshold | float | tuple] = (),
    tz: tzinfo | None = None,
    caption: bool = True,
) -> SafeString:
    """A time-series chart from ``start`` to ``end`` as a ``<figure class="chart">``: a time
    axis in local time, a value axis in ``unit`` (see ``format_value``), gridlines, one line per
    series (None values are gaps), optional threshold rules (``Threshold``, a number, or a
    (value, label) pair), a legend for several series, and "No data in this period" when nothing
    falls in the range. ``y_min``/``y_max`` fix the value axis (0 and 100 for uptime); otherwise
    it starts at 0 for non-negative data and ends at the nice tick above the highest value.
    ``caption=False`` leaves out the title line when the page has its own heading."""
    if end <= start:
        raise ValueError("A chart's end must be after its start.")
    tz = _tz(tz)
    rules = [_as_threshold(item) for item in thresholds]
    plot_height = max(40, height - _PLOT_TOP - _AXIS_HEIGHT)

    drawn = []  # (series, css class, runs inside the range)
    for index, line in enumerate(series):
        inside = [(moment, value) for moment, value in line.points if start <= moment <= end]
        css = line.css_class or f"series-{index % _DEFAULT_SERIES + 1}"
        drawn.append((line, css, _downsample(_runs(inside))))
    values = [value for _, _, runs in drawn for run in runs for _, value in run]

    y_ticks: list[float] = []
    low, high = 0.0, 1.0
    if values or y_min is not None or y_max is not None:
        candidates = values + [rule.value for rule in rules]
        low = y_min if y_min is not None else min(0.0, min(candidates, default=0.0))
        high = y_max if y_max is not None else max(candidates, default=1.0)
        y_ticks = _value_ticks(low, high, unit)
        # The axis ends at the nice ticks around the data, or exactly where the caller said.
        low = y_min if y_min is not None else y_ticks[0]
        high = y_max if y_max is not None else y_ticks[-1]
        if high <= low:
            high = low + 1
        y_ticks = [tick for tick in y_ticks if low - 1e-9 <= tick <= high + 1e-9]
    frame = _Frame(start, end, low, high, plot_height)
    rules = [rule for rule in rules if y_ticks and low <= rule.value <= high]

    gridlines, value_labels = _value_axis(frame, y_ticks, unit)
    parts = gridlines + _time_axis(frame, tz)
    parts.append(_data_area(frame, drawn, rules))
    parts += value_labels  # over the lines, on their halo
    for rule in rules:
        parts.append(
            _tag(
                "text",
                escape(rule.label or format_value(rule.value, unit)),
                class_=_classes("chart-threshold-label", rule.css_class),
                x="100%",
                dx=-2,
                y=_n(_PLOT_TOP + frame.y(rule.value) - 4),
                text_anchor="end",
            )
        )
    if not values:
        parts.append(
            _tag(
                "text",
                "No data in this period",
                class_="chart-empty",
                x="50%",
                y=_n(_PLOT_TOP + plot_height / 2 + 4),
                text_anchor="middle",
            )
        )

    summary = _line_summary(title, unit, start, end, tz, drawn)
    svg = _tag(
        "svg",
        _tag("title", escape(summary)) + "".join(parts),
        xmlns=SVG_NS,
        class_="chart-svg",
        width="100%",
        height=height,
        role="img",
        aria_label=summary,
    )
    head = _line_caption(title, unit, drawn, show_title=caption)
    return mark_safe(_tag("figure", head + svg, class_="chart"))  # noqa: S308 - built from escaped parts


def _value_axis(frame: _Frame, ticks: list[float], unit: str) -> tuple[list[str], list[str]]:
    """Gridlines, and their labels just above them (drawn over the data, on a halo)."""
    lines, labels = [], []
    for tick, label in zip(ticks, _format_ticks(ticks, unit), strict=True):
        y = math.floor(_PLOT_TOP + frame.y(tick)) + 0.5  # on the pixel grid: crisp
        css = "chart-grid chart-baseline" if tick == frame.low else "chart-grid"
        lines.append(_tag("line", class_=css, x1=0, x2="100%", y1=_n(y), y2=_n(y)))
        labels.append(
            _tag("text", escape(label), class_="chart-ylabel", x=2, y=_n(y - 4), data_value=tick)
        )
    if not ticks:
        y = _PLOT_TOP + frame.plot_height + 0.5
        lines.append(_tag("line", class_="chart-grid chart-baseline", x1=0, x2="100%", y1=y, y2=y))
    return lines, labels


def _time_axis(frame: _Frame, tz: tzinfo) -> list[str]:
    """A gridline and a label per nice moment; every other label hides in a narrow chart."""
    parts = []
    span = (frame.end - frame.start).total_seconds()
    bottom = _PLOT_TOP + frame.plot_height
    step, moments = _time_ticks(frame.start, frame.end, tz)
    for moment in moments:
        fraction = (moment - frame.start).total_seconds() / span
        x = f"{_n(100 * fraction)}%"
        anchor = "start" if fraction < 0.04 else "end" if fraction > 0.96 else "middle"
        alternate = _wall_seconds(moment, tz) // step % 2 == 1
        parts.append(
            _tag("line", class_="chart-grid chart-vgrid", x1=x, x2=x, y1=_PLOT_TOP, y2=bottom)
        )
        parts.append(
            _tag(
                "text",
                escape(_time_label(moment, step, tz)),
                class_=_classes("chart-xlabel", "is-alt" if alternate else ""),
                x=x,
                y=bottom + 16,
                text_anchor=anchor,
                data_time=moment.isoformat(),
            )
        )
    return parts


def _data_area(frame: _Frame, drawn: list, rules: list[Threshold]) -> str:
    """The lines, in the stretched coordinate system (see the module docstring)."""
    shapes = []
    for line, css, runs in drawn:
        paths = []
        for run in runs:
            coords = [(frame.x(moment), frame.y(value)) for moment, value in run]
            d = "M" + " L".join(f"{_n(x)} {_n(y)}" for x, y in coords)
            if len(drawn) == 1 and len(coords) > 1:
                base = _n(frame.y(0.0 if frame.low <= 0 <= frame.high else frame.low))
                area = f"{d} L{_n(coords[-1][0])} {base} L{_n(coords[0][0])} {base} Z"
                paths.append(_tag("path", class_="chart-area", d=area))
            if len(coords) == 1:
                # A lone sample between gaps: a dot. A zero-length round-capped stroke stays
                # round under the horizontal stretch, where a circle would turn into an ellipse.
                d, css_line = d + " h0", "chart-line chart-dot"
            else:
                css_line = "chart-line"
            paths.append(_tag("path", class_=css_line, d=d, vector_effect="non-scaling-stroke"))
        shapes.append(
            _tag(
                "g",
                "".join(paths),
                class_=_classes("chart-series", css),
                data_label=line.label,
            )
        )
    for rule in rules:
        y = _n(frame.y(rule.value))
        shapes.append(
            _tag(
                "path",
                class_=_classes("chart-threshold", rule.css_class),
                d=f"M0 {y} H{PLOT_WIDTH}",
                vector_effect="non-scaling-stroke",
                data_value=rule.value,
            )
        )
    height = frame.plot_height + 2 * _PLOT_PAD
    return _tag(
        "svg",
        "".join(shapes),
        class_="chart-plot",
        x=0,
        y=_PLOT_TOP - _PLOT_PAD,
        width="100%",
        height=_n(height),
        viewBox=f"0 {-_PLOT_PAD} {PLOT_WIDTH} {_n(height)}",
        preserveAspectRatio="none",
    )


def _last(runs: list[list[tuple[datetime, float]]]) -> float | None:
    return runs[-1][-1][1] if runs else None


def _line_summary(title, unit, start, end, tz, drawn) -> str:
    period = f"{_moment_text(start, tz)} to {_moment_text(end, tz)}"
    described = []
    for line, _, runs in drawn:
        values = [v for run in runs for _, v in run]
        if not values:
            continue
        name = f"{line.label}: " if len(drawn) > 1 else ""
        described.append(
            f"{name}last {format_value(_last(runs), unit)}, "
            f"min {format_value(min(values), unit)}, max {format_value(max(values), unit)}"
        )
    if not described:
        return f"{title}, {period}: no data in this period"
    return f"{title}, {period}. " + "; ".join(described)


def _line_caption(title: str, unit: str, drawn: list, *, show_title: bool) -> str:
    """The title with the latest value, and a legend (with each latest value) for several
    series; empty when there is neither."""
    parts = []
    if show_title:
        parts.append(_tag("span", escape(title), class_="chart-title"))
        last = _last(drawn[0][2]) if len(drawn) == 1 else None
        if last is not None:
            parts.append(_tag("span", escape(format_value(last, unit)), class_="chart-last"))
    if len(drawn) > 1:
        items = [
            _tag(
                "li",
                _tag("span", "", class_="chart-swatch", aria_hidden="true")
                + _tag("span", escape(line.label), class_="chart-legend-label")
                + _tag(
                    "span", escape(format_value(_last(runs), unit)), class_="chart-legend-value"
                ),
                class_=css,
            )
            for line, css, runs in drawn
        ]
        parts.append(_tag("ul", "".join(items), class_="chart-legend"))
    return _tag("figcaption", "".join(parts), class_="chart-head") if parts else ""


# --- sparkline -------------------------------------------------------------------------------

SPARK_WIDTH, SPARK_HEIGHT = 100, 24
_SPARK_MARGIN = 3  # the end dot's radius, so it is never cut


def sparkline(
    points: Sequence[tuple[datetime, float | None]],
    *,
    unit: str,
    css_class: str = "",
    label: str = "",
    y_min: float | None = None,
    y_max: float | None = None,
    show_value: bool = True,
) -> SafeString:
    """A 100×24 line of recent values for an agent card, followed by the last value. Gaps stay
    gaps; with no values, a flat dashed line titled "no data". ``label`` names the metric in the
    tooltip and for screen readers ("CPU"); ``y_min``/``y_max`` fix the scale (0-100 for a
    percentage), otherwise the line spans the lowest to the highest value."""
    runs = _downsample(_runs(points), limit=SPARK_WIDTH)
    values = [value for run in runs for _, value in run]
    prefix = f"{label}: " if label else ""
    svg_attributes = {
        "xmlns": SVG_NS,
        "width": SPARK_WIDTH,
        "height": SPARK_HEIGHT,
        "viewBox": f"0 0 {SPARK_WIDTH} {SPARK_HEIGHT}",
        "role": "img",
    }
    if not values:
        text = f"{prefix}no data"
        middle = SPARK_HEIGHT / 2
        line = _tag(
            "line", class_="sparkline-empty", x1=1, x2=SPARK_WIDTH - 1, y1=middle, y2=middle
        )
        svg = _tag(
            "svg",
            _tag("title", escape(text)) + line,
            class_="sparkline-svg is-empty",
            aria_label=text,
            **svg_attributes,
        )
        value = _tag("span", NO_VALUE, class_="sparkline-value", aria_hidden="true")
        return mark_safe(  # noqa: S308 - built from escaped parts
            _tag(
                "span", svg + (value if show_value else ""), class_=_classes("sparkline", css_class)
            )
        )

    first_time = runs[0][0][0]
    time_span = (runs[-1][-1][0] - first_time).total_seconds() or 1.0
    low = y_min if y_min is not None else min(values)
    high = y_max if y_max is not None else max(values)
    if high - low < 1e-12:
        low, high = low - 1, high + 1  # a flat line sits in the middle
    inner_width = SPARK_WIDTH - 2 * _SPARK_MARGIN
    inner_height = SPARK_HEIGHT - 2 * _SPARK_MARGIN

    def xy(moment: datetime, value: float) -> tuple[float, float]:
        x = _SPARK_MARGIN + inner_width * (moment - first_time).total_seconds() / time_span
        clamped = min(max(value, low), high)
        return x, _SPARK_MARGIN + inner_height * (1 - (clamped - low) / (high - low))

    shapes = []
    for run in runs:
        coords = [xy(moment, value) for moment, value in run]
        if len(coords) == 1:  # a lone sample between gaps: a short tick rather than nothing
            coords = [(coords[0][0] - 0.75, coords[0][1]), (coords[0][0] + 0.75, coords[0][1])]
        points_text = " ".join(f"{_n(x)},{_n(y)}" for x, y in coords)
        shapes.append(_tag("polyline", class_="sparkline-line", points=points_text))
    last_value = runs[-1][-1][1]
    end_x, end_y = xy(*runs[-1][-1])
    shapes.append(_tag("circle", class_="sparkline-end", cx=_n(end_x), cy=_n(end_y), r=2))
    text = (
        f"{prefix}last {format_value(last_value, unit)}, "
        f"min {format_value(min(values), unit)}, max {format_value(max(values), unit)}"
    )
    svg = _tag(
        "svg",
        _tag("title", escape(text)) + "".join(shapes),
        class_="sparkline-svg",
        aria_label=text,
        **svg_attributes,
    )
    value = _tag(
        "span", escape(format_value(last_value, unit)), class_="sparkline-value", aria_hidden="true"
    )
    return mark_safe(  # noqa: S308 - built from escaped parts
        _tag("span", svg + (value if show_value else ""), class_=_classes("sparkline", css_class))
    )


# --- dependency graph ------------------------------------------------------------------------

NODE_WIDTH, NODE_HEIGHT = 180, 46
COLUMN_GAP = 64  # room for the edges between layers
ROW_GAP = 14
ROUTE_HEIGHT = 12  # the slot an edge passing through a layer takes
GRAPH_PAD = 8
_NAME_CHARS = 20  # what fits on a node at the chart's font size


@dataclass
class _Slot:
    """A place in a layer: an agent, or the route of the edges to ``target`` passing through."""

    key: tuple[str, str, int]  # ("node", slug, layer) or ("route", target slug, layer)
    layer: int
    height: float
    y: float = 0.0

    @property
    def is_node(self) -> bool:
        return self.key[0] == "node"

    @property
    def centre(self) -> float:
        return self.y + self.height / 2


@dataclass
class GraphLayout:
    """Where everything goes: slots per layer (left to right) and the chain of slots each
    dependency edge passes through, from the dependent to the dependency."""

    layers: list[list[_Slot]]
    layer_of: dict[str, int]
    chains: dict[tuple[str, str], list[_Slot]]
    width: float
    height: float

    def x_of(self, layer: int) -> float:
        return GRAPH_PAD + layer * (NODE_WIDTH + COLUMN_GAP)

    def slot(self, slug: str) -> _Slot:
        return next(s for s in self.layers[self.layer_of[slug]] if s.key[:2] == ("node", slug))


def _layers(slugs: list[str], depends: dict[str, list[str]]) -> dict[str, int]:
    """Longest path to a node without dependencies; an edge closing a cycle is ignored."""
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(slug: str) -> int:
        if slug in layer:
            return layer[slug]
        if slug in visiting:
            return -1
        visiting.add(slug)
        below = [visit(dep) for dep in depends[slug]]
        visiting.discard(slug)
        layer[slug] = 1 + max(below, default=-1)
        return layer[slug]

    for slug in slugs:
        visit(slug)
    return layer


def _crossings(upper: list[_Slot], lower: list[_Slot], links: set[tuple]) -> int:
    position = {slot.key: i for i, slot in enumerate(lower)}
    pairs = sorted(
        (i, position[b]) for i, slot in enumerate(upper) for a, b in links if a == slot.key
    )
    count = 0
    for i, (a1, b1) in enumerate(pairs):
        for a2, b2 in pairs[i + 1 :]:
            if a1 < a2 and b1 > b2:
                count += 1
    return count


def layout_graph(nodes: Sequence[Node], edges: Iterable[tuple[str, str]]) -> GraphLayout:
    """Layers by dependency depth (layer 0 depends on nothing), edges that skip layers routed
    through the layers between (one shared route per dependency, so twelve edges into the event
    bus become one line, not twelve), order within a layer by barycentre sweeps keeping the
    ordering with the fewest crossings, then heights pulled towards neighbours."""
    slugs = [node.slug for node in nodes]
    known = set(slugs)
    depends: dict[str, list[str]] = {slug: [] for slug in slugs}
    for dependent, dependency in edges:
        if dependent in known and dependency in known and dependency not in depends[dependent]:
            depends[dependent].append(dependency)
    layer_of = _layers(slugs, depends)
    layer_count = max(layer_of.values(), default=-1) + 1

    slots: dict[tuple, _Slot] = {}

    def slot_for(key: tuple[str, str, int]) -> _Slot:
        if key not in slots:
            height = NODE_HEIGHT if key[0] == "node" else ROUTE_HEIGHT
            slots[key] = _Slot(key, key[2], height)
        return slots[key]

    for slug in slugs:
        slot_for(("node", slug, layer_of[slug]))
    chains: dict[tuple[str, str], list[_Slot]] = {}
    links: set[tuple] = set()  # (upper slot key, lower slot key) between adjacent layers
    for dependent in slugs:
        for dependency in depends[dependent]:
            top, bottom = layer_of[dependent], layer_of[dependency]
            chain = [slot_for(("node", dependent, top))]
            chain += [
                slot_for(("route", dependency, layer)) for layer in range(top - 1, bottom, -1)
            ]
            chain.append(slot_for(("node", dependency, bottom)))
            chains[(dependent, dependency)] = chain
            for upper, lower in itertools.pairwise(chain):
                if upper.layer == lower.layer + 1:
                    links.add((upper.key, lower.key))

    layers: list[list[_Slot]] = [[] for _ in range(layer_count)]
    for slot in slots.values():  # insertion order: nodes as given, then routes
        layers[slot.layer].append(slot)
    down = {key: [b for a, b in links if a == key] for key in slots}
    up = {key: [a for a, b in links if b == key] for key in slots}

    def total_crossings(order: list[list[_Slot]]) -> int:
        return sum(_crossings(order[i + 1], order[i], links) for i in range(len(order) - 1))

    def reorder(layer: list[_Slot], neighbours: dict, reference: list[_Slot]) -> list[_Slot]:
        position = {slot.key: i for i, slot in enumerate(reference)}

        def barycentre(item: tuple[int, _Slot]) -> tuple[float, int]:
            index, slot = item
            around = [position[k] for k in neighbours[slot.key] if k in position]
            # Scaled so a slot without neighbours keeps roughly its place.
            centre = sum(around) / len(around) if around else index * len(reference) / len(layer)
            return centre, index

        return [slot for _, slot in sorted(enumerate(layer), key=barycentre)]

    best = [list(layer) for layer in layers]
    best_count = total_crossings(best)
    order = [list(layer) for layer in layers]
    for _ in range(6):
        for i in range(1, layer_count):
            order[i] = reorder(order[i], down, order[i - 1])
        for i in range(layer_count - 2, -1, -1):
            order[i] = reorder(order[i], up, order[i + 1])
        count = total_crossings(order)
        if count < best_count:
            best, best_count = [list(layer) for layer in order], count
    layers = best

    _place_vertically(layers, up, down, slots)
    lowest = max((s.y + s.height for layer in layers for s in layer), default=0.0)
    width = GRAPH_PAD * 2 + layer_count * NODE_WIDTH + max(0, layer_count - 1) * COLUMN_GAP
    return GraphLayout(layers, layer_of, chains, width, lowest + GRAPH_PAD)


def _place_vertically(layers, up, down, slots) -> None:
    """Stack each layer in order, then pull slots towards the height of what they connect to
    (keeping order and gaps), a few sweeps each way; finally start the drawing at the top."""

    def gap(a: _Slot, b: _Slot) -> float:
        # Routes keep clear of boxes, so a junction is never mistaken for an arrow into one.
        return ROW_GAP if a.is_node or b.is_node else ROW_GAP / 2

    for layer in layers:
        y = 0.0
        for i, slot in enumerate(layer):
            slot.y = y if i == 0 else y + gap(layer[i - 1], slot)
            y = slot.y + slot.height

    def settle(layer: list[_Slot], neighbours: dict) -> None:
        if not layer:
            return
        wanted = []
        for slot in layer:
            around = [slots[k].centre for k in neighbours[slot.key]]
            wanted.append(sum(around) / len(around) - slot.height / 2 if around else slot.y)
        # Top to bottom: as wanted, but never overlapping the slot above.
        for i, slot in enumerate(layer):
            slot.y = (
                wanted[i]
                if i == 0
                else max(wanted[i], layer[i - 1].y + layer[i - 1].height + gap(layer[i - 1], slot))
            )
        # Pushed-down slots drag the whole layer up by their mean excess, so no side is favoured.
        excess = sum(slot.y - w for slot, w in zip(layer, wanted, strict=True)) / len(layer)
        for slot in layer:
            slot.y -= excess

    for _ in range(4):
        for i in range(1, len(layers)):
            settle(layers[i], down)
        for i in range(len(layers) - 2, -1, -1):
            settle(layers[i], up)
    top = min((slot.y for layer in layers for slot in layer), default=0)
    for layer in layers:
        for slot in layer:
            slot.y += GRAPH_PAD - top


def _ports(slot: _Slot, others: list[_Slot]) -> dict[tuple, float]:
    """Where edges meet a node's side: spread along it in the order of their other ends, so
    lines leave and arrive without crossing at the box."""
    if not slot.is_node:
        return {other.key: slot.centre for other in others}
    ordered = sorted(others, key=lambda other: other.centre)
    usable = slot.height - 16
    if len(ordered) == 1:
        return {ordered[0].key: slot.centre}
    return {
        other.key: slot.y + 8 + usable * i / (len(ordered) - 1) for i, other in enumerate(ordered)
    }


def _short_name(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1].rstrip() + "…"


def _node_inner(node: Node, dependency_names: list[str], href: str | None) -> str:
    """What is inside a node's positioned ``<g id="graph-node-…">``: what a live update swaps."""
    status = node.state.upper()
    if node.health and node.health != "unknown":
        status += f" · {node.health}"
    tooltip = f"{node.name} ({status}). Depends on: {', '.join(dependency_names) or 'nothing'}."
    content = (
        _tag("title", escape(tooltip))
        + _tag("rect", class_="graph-node-box", width=NODE_WIDTH, height=NODE_HEIGHT, rx=8)
        + _tag("rect", class_="graph-node-bar", x=6, y=6, width=4, height=NODE_HEIGHT - 12, rx=2)
        + _tag("text", escape(_short_name(node.name)), class_="graph-node-name", x=18, y=19)
        + _tag("text", escape(status), class_="graph-node-state", x=18, y=36)
    )
    classes = _classes(
        "graph-node",
        f"state-{node.state.lower()}",
        f"tier-{node.tier}" if node.tier else "",
        f"health-{node.health}" if node.health else "",
    )
    if href:
        return _tag("a", content, class_=classes, href=href)
    return _tag("g", content, class_=classes, tabindex=0)


def dependency_graph(
    nodes: Sequence[Node],
    edges: Iterable[tuple[str, str]],
    *,
    link: Callable[[str], str] | None = None,
    label: str = "Agent dependencies",
) -> SafeString:
    """The agents and what each depends on, left to right: an agent stands right of everything
    it depends on, and arrows point from the dependent to its dependency. Each node is coloured
    by state (the badges' ``state-*`` classes) with the state also written out, links to
    ``link(slug)``, is focusable, and tells its dependencies in a tooltip. Its
    ``<g id="graph-node-<slug>">`` holds its place while a live update swaps what is inside
    (see ``dependency_graph_node``). Drawn at its natural size inside a horizontally scrollable
    ``<div class="graph-scroll">``, never shrunk below legibility."""
    edges = list(edges)
    if not nodes:
        return mark_safe(  # noqa: S308 - constant
            '<div class="graph-scroll graph-empty"><p class="muted">No agents to show.</p></div>'
        )
    layout = layout_graph(nodes, edges)
    names = {node.slug: node.name for node in nodes}
    edge_paths = _edge_paths(layout)

    edge_parts = [
        _tag(
            "path",
            _tag("title", escape(f"{names[dependent]} depends on {names[dependency]}")),
            class_="graph-edge",
            d=d,
            data_from=dependent,
            data_to=dependency,
            marker_end="url(#graph-arrow)",
        )
        for (dependent, dependency), d in edge_paths.items()
    ]
    dependency_names: dict[str, list[str]] = {node.slug: [] for node in nodes}
    for dependent, dependency in layout.chains:
        dependency_names[dependent].append(names[dependency])
    node_parts = []
    for node in nodes:
        slot = layout.slot(node.slug)
        node_parts.append(
            _tag(
                "g",
                _node_inner(node, dependency_names[node.slug], link(node.slug) if link else None),
                id=f"graph-node-{node.slug}",
                class_="graph-node-place",
                transform=f"translate({_n(layout.x_of(slot.layer))} {_n(slot.y)})",
                data_layer=slot.layer,
            )
        )

    arrow = _tag(
        "marker",
        _tag("path", d="M0 0.5 L8 4 L0 7.5 Z"),
        id="graph-arrow",
        class_="graph-arrow",
        viewBox="0 0 8 8",
        refX=7,
        refY=4,
        markerWidth=8,
        markerHeight=8,
        markerUnits="userSpaceOnUse",
        orient="auto",
    )
    width, height = _n(layout.width), _n(layout.height)
    svg = _tag(
        "svg",
        _tag("title", escape(label))
        + _tag("defs", arrow)
        + _tag("g", "".join(edge_parts), class_="graph-edges")
        + _tag("g", "".join(node_parts), class_="graph-nodes"),
        xmlns=SVG_NS,
        class_="graph-svg",
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
        role="group",
        aria_label=f"{label}: {len(nodes)} agents; arrows point from an agent to what it needs",
    )
    return mark_safe(_tag("div", svg, class_="graph-scroll"))  # noqa: S308 - built from escaped parts


def _edge_paths(layout: GraphLayout) -> dict[tuple[str, str], str]:
    """Each dependency edge's path: out of the dependent's left side, along its route through
    the layers it skips, into the dependency's right side, as smooth S-bends between layers."""
    segments: dict[tuple, tuple[_Slot, _Slot]] = {}
    for chain in layout.chains.values():
        for upper, lower in itertools.pairwise(chain):
            segments[(upper.key, lower.key)] = (upper, lower)
    left_ends: dict[tuple, list[_Slot]] = {}  # per slot, what its left side connects to
    right_ends: dict[tuple, list[_Slot]] = {}
    slots: dict[tuple, _Slot] = {}
    for upper, lower in segments.values():
        left_ends.setdefault(upper.key, []).append(lower)
        right_ends.setdefault(lower.key, []).append(upper)
        slots[upper.key], slots[lower.key] = upper, lower
    left_ports = {key: _ports(slots[key], others) for key, others in left_ends.items()}
    right_ports = {key: _ports(slots[key], others) for key, others in right_ends.items()}

    paths = {}
    for (dependent, dependency), chain in layout.chains.items():
        if layout.layer_of[dependent] <= layout.layer_of[dependency]:
            continue  # an edge closing a cycle has no left-to-right route; leave it out
        d = f"M{_n(layout.x_of(chain[0].layer))} {_n(left_ports[chain[0].key][chain[1].key])}"
        for upper, lower in itertools.pairwise(chain):
            x1 = layout.x_of(upper.layer)
            if not upper.is_node:
                d += f" H{_n(x1)}"  # straight through the layer the route crosses
            y1 = left_ports[upper.key][lower.key]
            x2 = layout.x_of(lower.layer) + NODE_WIDTH
            y2 = right_ports[lower.key][upper.key]
            bend = (x1 - x2) / 2
            d += f" C{_n(x1 - bend)} {_n(y1)} {_n(x2 + bend)} {_n(y2)} {_n(x2)} {_n(y2)}"
        paths[(dependent, dependency)] = d
    return paths


def dependency_graph_node(
    node: Node, dependency_names: Sequence[str], *, link: Callable[[str], str] | None = None
) -> SafeString:
    """One node's new content for a live update: an ``<svg>`` wrapper (so the browser parses
    what is inside as SVG) carrying ``hx-swap-oob="innerHTML:#graph-node-<slug>"``. htmx puts
    the node's new state, colour and tooltip inside the positioned group; the layout stays."""
    inner = _node_inner(node, list(dependency_names), link(node.slug) if link else None)
    return mark_safe(  # noqa: S308 - built from escaped parts
        _tag("svg", inner, xmlns=SVG_NS, hx_swap_oob=f"innerHTML:#graph-node-{node.slug}")
    )
