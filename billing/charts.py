"""Small server-rendered SVG bar charts for the admin pages: no script, nothing fetched."""

import math
from collections.abc import Callable, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 900, 240
# Room for the value labels on the left and the day labels below.
LEFT, RIGHT, TOP, BOTTOM = 72, 40, 14, 30
GRIDLINES = 4


def nice_step(value: float, smallest: float | None = None) -> float:
    """The gridline step: the least 1, 2 or 5 times a power of ten whose GRIDLINES steps reach `value`,
    and no less than `smallest` (1 for counts, so an axis never shows half a request)."""
    if value <= 0:
        return smallest or 1.0
    raw = value / GRIDLINES
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if raw <= m * power * (1 + 1e-9))
    return max(step, smallest or 0)


def _n(number: float) -> str:
    # format_html escapes its arguments into strings first, so numbers are formatted here.
    return f"{number:.1f}"


def bar_chart(
    bars: Sequence[tuple[str, float]], *, title: str, axis: Callable[[float], str], tip: Callable[[float], str],
    label_every: int = 5, smallest_step: float | None = None,
) -> SafeString:
    """A bar per (label, value), its tooltip "label: tip(value)"; `axis` writes the gridline values.
    Every label is escaped."""
    step = nice_step(max((value for _, value in bars), default=0), smallest_step)
    top = step * GRIDLINES
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = TOP + plot_height
    slot = plot_width / max(1, len(bars))
    grid = format_html_join("", (
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-opacity="0.15" stroke-width="1"/>'
        '<text x="{}" y="{}" dy="4" text-anchor="end" font-size="12" fill="currentColor">{}</text>'
    ), ((LEFT, WIDTH - RIGHT, _n(y), _n(y), LEFT - 6, _n(y), axis(step * part))
        for part in range(GRIDLINES + 1) for y in [base - plot_height * part / GRIDLINES]))
    rects = format_html_join("", (
        '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}: {}</title></rect>'
    ), ((*_bar(index, value, slot, top, plot_height), label, tip(value)) for index, (label, value) in enumerate(bars)))
    # The last bar (today) always gets its label; the rest every `label_every`, counted back from it.
    ticks = format_html_join("", (
        '<text x="{}" y="{}" text-anchor="middle" font-size="12" fill="currentColor">{}</text>'
    ), ((_n(LEFT + slot * (index + 0.5)), base + 18, label)
        for index, (label, _) in enumerate(bars) if (len(bars) - 1 - index) % label_every == 0))
    return format_html(
        '<svg class="bar-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" '
        'role="img" aria-label="{}"><title>{}</title>{}{}'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="currentColor" stroke-width="1"/>{}</svg>',
        WIDTH, HEIGHT, title, title, grid, rects, LEFT, WIDTH - RIGHT, base, base, ticks,
    )


def _bar(index: int, value: float, slot: float, top: float, plot_height: float) -> tuple[str, str, str, str]:
    height = plot_height * max(0.0, value) / top
    # A tiny bar still shows there was some use that day.
    if value > 0:
        height = max(height, 1.5)
    return _n(LEFT + slot * (index + 0.15)), _n(TOP + plot_height - height), _n(slot * 0.7), _n(height)
