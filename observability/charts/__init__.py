"""Server-rendered SVG charts for the observability pages: line charts and sparklines, plus the
number formatters they label themselves with. (Graphs are drawn in the browser: see
``portal.graphs``.)

Pure Python on purpose: no JavaScript charting library, no models. Colours come from CSS
(``static/observability/charts.css``) through ``currentColor`` and the portal's theme
variables, so one rendering serves the dark and the light theme.

How a line chart stays crisp at any width: the outer ``<svg>`` has no viewBox, so its user units
are CSS pixels and its text is never stretched; horizontal positions of labels and gridlines are
percentages of its width. Only the data sits in a nested ``<svg>`` whose viewBox is 1000 units
wide and exactly as tall as the plot in pixels, stretched horizontally with
``preserveAspectRatio="none"``; its strokes are non-scaling, so lines keep their width too.
"""

from observability.charts.lines import line_chart, sparkline
from observability.charts.svg import (
    MAX_POINTS,
    NO_VALUE,
    PLOT_WIDTH,
    Series,
    Threshold,
    format_value,
)

__all__ = [
    "MAX_POINTS",
    "NO_VALUE",
    "PLOT_WIDTH",
    "Series",
    "Threshold",
    "format_value",
    "line_chart",
    "sparkline",
]
