"""The server-rendered charts: read back as XML and checked for what a reader relies on, where
each point lands, which ticks show, that gaps stay gaps. One test looks at the rendering in a
real Chromium: text never stretched, narrow and wide. (The dependency graph is drawn in the
browser: tests/portal/test_graphs.py and tests/browser/test_graph.py.)"""

from __future__ import annotations

import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from observability.charts import (
    PLOT_WIDTH,
    Series,
    Threshold,
    format_value,
    line_chart,
    sparkline,
)

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2025, 4, 21, 10, 0, tzinfo=UTC)  # a Monday
END = START + timedelta(hours=1)


def parse(html: str) -> ET.Element:
    """The markup as XML, without the SVG namespace in tag names."""
    root = ET.fromstring(str(html))
    for element in root.iter():
        element.tag = element.tag.rsplit("}", 1)[-1]
    return root


def having_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in e.get("class", "").split()]


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext())


def minutes(*values: float | None, start: datetime = START, every: int = 1):
    return [(start + timedelta(minutes=every * i), v) for i, v in enumerate(values)]


def path_points(d: str) -> list[tuple[float, float]]:
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[::2], numbers[1::2], strict=False))


def plot_height(root: ET.Element) -> float:
    """The data area's viewBox is as tall as the plot in pixels, plus a pad above and below."""
    _, top, _, height = (
        float(n) for n in having_class(root, "chart-plot")[0].get("viewBox").split()
    )
    return height + 2 * top


def chart(series, **options) -> ET.Element:
    options = {"title": "CPU", "unit": "%", "start": START, "end": END, "tz": UTC} | options
    return parse(line_chart(series, **options))


# --- format_value --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (12.5, "%", "12.5 %"),
        (0, "%", "0 %"),
        (230 * 1024**2, "bytes", "230 MiB"),
        (1.2 * 1024**3, "bytes", "1.2 GiB"),
        (512, "B", "512 B"),
        (3.4, "/s", "3.4/s"),
        (1234, "/s", "1.23k/s"),
        (120, "ms", "120 ms"),
        (1500, "ms", "1.5 s"),
        (999.7, "ms", "1 s"),
        (0.5, "s", "500 ms"),
        (90, "s", "1.5 min"),
        (7, "", "7"),
        (1234, "", "1.23k"),
        (0.0123, "/s", "0.0123/s"),
        (None, "%", "–"),
        (float("nan"), "ms", "–"),
        (3, "tasks", "3 tasks"),
    ],
)
def test_format_value_is_compact_with_its_unit(value, unit, expected):
    assert format_value(value, unit) == expected


# --- line chart ----------------------------------------------------------------------------


def test_each_run_between_gaps_is_one_path():
    values = [1, 2, 3, None, None, 4, 5, None, 6, None, 7, 8]  # runs: 3, 2, 1 (a dot), 2
    root = chart([Series("CPU", minutes(*values))])

    lines = having_class(root, "chart-line")
    assert len(lines) == 4
    assert [len(path_points(line.get("d"))) for line in lines] == [3, 2, 1, 2]
    dot = lines[2]
    assert "chart-dot" in dot.get("class") and dot.get("d").endswith("h0")
    assert all(line.get("vector-effect") == "non-scaling-stroke" for line in lines)


def test_points_land_at_their_time_and_value():
    points = [(START, 0.0), (START + timedelta(minutes=15), 50.0), (END, 100.0)]
    root = chart([Series("CPU", points)], y_min=0, y_max=100)

    height = plot_height(root)
    (line,) = having_class(root, "chart-line")
    assert path_points(line.get("d")) == [
        (0, height),  # the lowest value at the bottom
        (PLOT_WIDTH / 4, height / 2),
        (PLOT_WIDTH, 0),  # the highest at the top
    ]


def test_the_value_axis_ends_at_the_nice_tick_above_the_data():
    root = chart([Series("CPU", minutes(3, 37, 12))])

    labels = [text_of(e) for e in having_class(root, "chart-ylabel")]
    assert labels == ["0 %", "10 %", "20 %", "30 %", "40 %"]
    height = plot_height(root)
    (line,) = having_class(root, "chart-line")
    ys = [y for _, y in path_points(line.get("d"))]
    assert ys[1] == pytest.approx(height * (1 - 37 / 40), abs=0.05)


@pytest.mark.parametrize(
    ("values", "unit", "expected"),
    [
        ([120 * 1024**2, 290 * 1024**2], "bytes", ["0 MiB", "100 MiB", "200 MiB", "300 MiB"]),
        ([1.1 * 1024**3, 2.2 * 1024**3], "bytes", ["0 GiB", "1 GiB", "2 GiB", "3 GiB"]),
        ([80, 1400], "ms", ["0 s", "0.5 s", "1 s", "1.5 s"]),
        ([80, 230], "ms", ["0 ms", "100 ms", "200 ms", "300 ms"]),
        ([0.2, 4.8], "/s", ["0/s", "2/s", "4/s", "6/s"]),
        ([0.1, 0.9], "", ["0", "0.25", "0.5", "0.75", "1"]),
        ([2, 48], "", ["0", "20", "40", "60"]),
    ],
)
def test_value_ticks_are_nice_numbers_in_the_unit(values, unit, expected):
    root = chart([Series("x", minutes(*values))], unit=unit)

    assert [text_of(e) for e in having_class(root, "chart-ylabel")] == expected


def test_uptime_runs_from_0_to_100_percent():
    root = chart([Series("Uptime", minutes(100, 100, 0, 100))], y_min=0, y_max=100)

    assert [text_of(e) for e in having_class(root, "chart-ylabel")] == [
        "0 %",
        "25 %",
        "50 %",
        "75 %",
        "100 %",
    ]


def test_tick_labels_sit_on_their_gridlines():
    root = chart([Series("CPU", minutes(10, 20))], y_min=0, y_max=100)

    height = plot_height(root)
    top = float(having_class(root, "chart-plot")[0].get("y")) + 4  # the plot starts below the pad
    for label in having_class(root, "chart-ylabel"):
        expected_y = math.floor(top + height * (1 - float(label.get("data-value")) / 100)) + 0.5
        assert float(label.get("y")) == expected_y - 4  # just above its line
    horizontal = [
        e for e in having_class(root, "chart-grid") if "chart-vgrid" not in e.get("class")
    ]
    assert len(horizontal) == 5


@pytest.mark.parametrize(
    ("span", "tz", "expected"),
    [
        (timedelta(minutes=15), UTC, ["10:00", "10:05", "10:10", "10:15"]),
        (timedelta(hours=1), UTC, ["10:00", "10:10", "10:20", "10:30", "10:40", "10:50", "11:00"]),
        (
            timedelta(hours=6),
            ZoneInfo("Asia/Kolkata"),  # 15:30 local: ticks on the local hour, not at :30
            ["16:00", "17:00", "18:00", "19:00", "20:00", "21:00"],
        ),
        (
            timedelta(hours=24),  # midnight shows the day
            UTC,
            ["12:00", "15:00", "18:00", "21:00", "Tue 22", "03:00", "06:00", "09:00"],
        ),
        (
            timedelta(days=7),
            UTC,
            ["Tue 22", "Wed 23", "Thu 24", "Fri 25", "Sat 26", "Sun 27", "Mon 28"],
        ),
        (timedelta(days=30), UTC, ["28 Apr", "5 May", "12 May", "19 May"]),
    ],
)
def test_time_ticks_are_nice_local_moments(span, tz, expected):
    end = START + span
    root = chart([Series("CPU", [(START, 1.0), (end, 2.0)])], end=end, tz=tz)

    labels = having_class(root, "chart-xlabel")
    assert [text_of(e) for e in labels] == expected
    for label in labels:
        moment = datetime.fromisoformat(label.get("data-time"))
        fraction = (moment - START) / span
        assert label.get("x") == f"{round(100 * fraction, 1):g}%"


def test_time_labels_use_the_current_timezone_by_default():
    with timezone.override(ZoneInfo("Asia/Kolkata")):
        html = line_chart([], title="CPU", unit="%", start=START, end=END)

    labels = [text_of(e) for e in having_class(parse(html), "chart-xlabel")]
    assert labels[0] == "15:30" and labels[-1] == "16:30"


def test_every_other_time_label_may_hide_on_a_narrow_chart():
    root = chart([Series("CPU", minutes(1, 2))])

    alternate = ["is-alt" in e.get("class") for e in having_class(root, "chart-xlabel")]
    assert alternate == [False, True, False, True, False, True, False]


def test_a_threshold_is_a_line_at_its_value_with_a_label():
    root = chart(
        [Series("Error rate", minutes(1, 2, 9.5))],
        title="Error rate",
        thresholds=[Threshold(5, "alert above 5 %")],
    )

    height = plot_height(root)
    (rule,) = having_class(root, "chart-threshold")
    assert path_points(rule.get("d")) == [(0, height / 2)]  # the axis ends at 10 %
    assert rule.get("d").endswith(f"H{PLOT_WIDTH}")
    (label,) = having_class(root, "chart-threshold-label")
    assert text_of(label) == "alert above 5 %"


def test_a_threshold_above_the_data_widens_the_axis_and_labels_itself():
    root = chart([Series("Latency", minutes(80, 120))], unit="ms", thresholds=[500])

    labels = [text_of(e) for e in having_class(root, "chart-ylabel")]
    assert labels == ["0 ms", "200 ms", "400 ms", "600 ms"]
    (rule,) = having_class(root, "chart-threshold")
    assert path_points(rule.get("d"))[0][1] == pytest.approx(plot_height(root) / 6, abs=0.05)
    assert text_of(having_class(root, "chart-threshold-label")[0]) == "500 ms"


def test_no_data_in_the_period_says_so_inside_the_frame():
    before = START - timedelta(hours=2)
    root = chart([Series("CPU", [(before, 5.0), (START, None), (END, None)])])

    assert not having_class(root, "chart-line")
    (empty,) = having_class(root, "chart-empty")
    assert text_of(empty) == "No data in this period"
    svg = root.find("svg")
    assert svg.get("role") == "img"
    assert svg.get("aria-label").endswith("no data in this period")
    assert having_class(root, "chart-xlabel"), "the time axis is still drawn"


def test_points_outside_the_period_are_left_out():
    points = minutes(50, 60, start=START - timedelta(minutes=2)) + minutes(10, 20)
    root = chart([Series("CPU", points)])

    (line,) = having_class(root, "chart-line")
    assert [x for x, _ in path_points(line.get("d"))] == [
        0,
        pytest.approx(PLOT_WIDTH / 60, abs=0.05),
    ]


def test_many_points_are_downsampled_keeping_the_spikes():
    values = [10.0 + (i % 7) for i in range(5000)]
    values[2345] = 95.0
    values[4000] = 0.0
    root = chart([Series("CPU", minutes(*values, every=1))], end=START + timedelta(minutes=4999))

    (line,) = having_class(root, "chart-line")
    points = path_points(line.get("d"))
    assert len(points) <= 310
    height = plot_height(root)
    ys = [y for _, y in points]
    assert min(ys) == pytest.approx(height * (1 - 95 / 100), abs=0.05)  # the spike survives
    assert max(ys) == pytest.approx(height, abs=0.05)  # and so does the dip to 0
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and xs[0] == 0 and xs[-1] == PLOT_WIDTH


def test_the_chart_describes_itself_for_screen_readers():
    root = chart([Series("CPU", minutes(12.5, 40, 3.25))], title="CPU · WowCache")

    svg = root.find("svg")
    label = svg.get("aria-label")
    assert svg.get("role") == "img"
    assert svg.find("title").text == label
    assert label.startswith("CPU · WowCache, Mon 21 Apr 10:00 to Mon 21 Apr 11:00.")
    assert "last 3.25 %, min 3.25 %, max 40 %" in label
    assert text_of(having_class(root, "chart-last")[0]) == "3.25 %"


def test_text_is_never_inside_the_stretched_area():
    root = chart([Series("CPU", minutes(1, 2))], thresholds=[1.5])

    plot = having_class(root, "chart-plot")[0]
    assert plot.get("preserveAspectRatio") == "none"
    assert not plot.findall(".//text")
    assert root.find("svg").get("viewBox") is None  # the outer drawing is in CSS pixels


def test_a_legend_names_several_series_with_their_last_values():
    root = chart(
        [
            Series("p50", minutes(80, 90)),
            Series("p95", minutes(150, 210), "series-warn"),
        ],
        title="Latency",
        unit="ms",
    )

    items = root.findall(".//ul[@class='chart-legend']/li")
    assert [text_of(item) for item in items] == ["p5090 ms", "p95210 ms"]
    assert [item.get("class") for item in items] == ["series-1", "series-warn"]
    groups = having_class(root, "chart-series")
    assert [g.get("class") for g in groups] == ["chart-series series-1", "chart-series series-warn"]
    assert "p50: last 90 ms" in root.find("svg").get("aria-label")


def test_a_single_series_has_no_legend():
    assert not chart([Series("CPU", minutes(1, 2))]).findall(".//ul")


def test_names_are_escaped():
    root = chart([Series("<b>&", minutes(1, 2)), Series("a\"b'", minutes(3))], title="<script>")

    assert text_of(root.find(".//span[@class='chart-title']")) == "<script>"
    assert root.find("svg").find("title").text.startswith("<script>")
    assert [g.get("data-label") for g in having_class(root, "chart-series")] == ["<b>&", "a\"b'"]


def test_an_end_before_the_start_is_refused():
    with pytest.raises(ValueError, match="end must be after its start"):
        line_chart([], title="CPU", unit="%", start=END, end=START)


# --- sparkline -----------------------------------------------------------------------------


def test_a_sparkline_draws_each_run_and_shows_the_last_value():
    root = parse(sparkline(minutes(10, 20, None, 30, 40), unit="%", label="CPU"))

    svg = root.find("svg")
    assert (svg.get("width"), svg.get("height")) == ("100", "24")
    assert len(svg.findall("polyline")) == 2
    assert text_of(having_class(root, "sparkline-value")[0]) == "40 %"
    assert svg.find("title").text == "CPU: last 40 %, min 10 %, max 40 %"
    end = svg.find("circle")
    assert (float(end.get("cx")), float(end.get("cy"))) == (97, 3)  # newest and highest
    first = path_points(svg.findall("polyline")[0].get("points").replace(",", " "))[0]
    assert first == (3, 21)  # oldest and lowest


def test_an_empty_sparkline_is_a_dashed_line_titled_no_data():
    root = parse(sparkline([], unit="ms", label="Latency"))

    svg = root.find("svg")
    assert "is-empty" in svg.get("class")
    assert svg.find("title").text == "Latency: no data"
    assert having_class(root, "sparkline-empty")
    assert not svg.findall("polyline")


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but Chromium is missing")
        pytest.skip("Chromium is not installed (apt-get install chromium); CI runs this test.")
    return path


def demo_page(theme: str = "dark") -> str:
    charts = line_chart(
        [Series("p50", minutes(80, 95, None, 90, 85)), Series("p95", minutes(150, 900, None, 300))],
        title="Latency",
        unit="ms",
        start=START,
        end=START + timedelta(minutes=4),
        thresholds=[Threshold(500, "alert")],
        tz=UTC,
    )
    return f"""<!doctype html><html data-theme="{theme}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{(ROOT / "static/css/portal.css").as_uri()}">
<link rel="stylesheet" href="{(ROOT / "static/observability/charts.css").as_uri()}"></head>
<body><main class="content"><div class="card panel">{charts}</div>
<div class="card panel">{sparkline(minutes(1, 3, 2), unit="/s")}</div></main></body></html>"""


@pytest.mark.browser
def test_in_chromium_text_keeps_its_size(chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    page_file = tmp_path / "charts.html"
    page_file.write_text(demo_page())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            sizes = {}
            for width in (375, 1400):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(page_file.as_uri())
                sizes[width] = page.evaluate(
                    """() => {
                      const box = e => e.getBoundingClientRect();
                      const chart = box(document.querySelector('.chart-svg'));
                      const plot = box(document.querySelector('.chart-plot'));
                      const label = box(document.querySelector('.chart-ylabel'));
                      return {chart: chart.width, plot: plot.width, labelHeight: label.height,
                              labelWidth: label.width};
                    }"""
                )
                page.close()
            narrow, wide = sizes[375], sizes[1400]
            assert narrow["chart"] < 375 < wide["chart"]
            assert narrow["plot"] == pytest.approx(narrow["chart"], abs=1)  # the data fills it
            # Text is the same size however wide the chart is: nothing is stretched.
            assert narrow["labelHeight"] == pytest.approx(wide["labelHeight"], abs=0.5)
            assert narrow["labelWidth"] == pytest.approx(wide["labelWidth"], abs=0.5)
        finally:
            browser.close()
