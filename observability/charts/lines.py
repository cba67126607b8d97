"""Line charts and sparklines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from observability.charts.svg import (
    NO_VALUE,
    PLOT_WIDTH,
    SVG_NS,
    Series,
    Threshold,
    _classes,
    _downsample,
    _format_ticks,
    _moment_text,
    _n,
    _runs,
    _tag,
    _time_label,
    _time_ticks,
    _tz,
    _value_ticks,
    _wall_seconds,
    format_value,
)

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
