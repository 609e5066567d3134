"""The report's charts as inline SVG strings (no JavaScript library): the per-category
bars, effect against model size and the judge-vs-human heatmap. Model-free: they draw a
:class:`evaluation.report.tree.Report`."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import mark_safe

from evaluation.report.tree import Report

ARM_COLOURS = {"base": "#8a94a6", "control": "#d9822b", "values_targeted": "#2b6cb0"}
LABELLED_COLOUR = "#4a9d5b"  # an arm with a free label, apart from its role's colour
LETTER_COLOURS = ["#2b6cb0", "#d9822b", "#4a9d5b", "#9b4dca", "#c53030", "#718096"]


def _colour(report: Report, arm) -> str:
    if arm.free_label:
        return LABELLED_COLOUR
    if arm.kind:
        return ARM_COLOURS.get(arm.kind, "#555")
    return LETTER_COLOURS[(ord(arm.letter[0]) - 65) % len(LETTER_COLOURS)]


def _y(score: float, top: float, height: float) -> float:
    return top + height * (5 - score) / 4  # the 1–5 scale, upwards (the size chart)


# The per-category chart is drawn at a fixed size in pixels, whatever the number of
# categories: one row per category (horizontal labels, never rotated), one bar per arm, so
# its fonts never scale with the page. A study with more categories gets a taller chart.
CHART_LABEL_W, CHART_PLOT_W, CHART_VALUE_W = 190, 320, 44
CHART_BAR_H, CHART_BAR_GAP, CHART_GROUP_GAP, CHART_TOP = 12, 2, 12, 26
CHART_FONT, CHART_SMALL_FONT = 12, 11
CHART_LABEL_CHARS = 28


def _x(score: float) -> float:
    return CHART_LABEL_W + CHART_PLOT_W * (score - 1) / 4  # the 1–5 scale


def category_chart(report: Report) -> str:
    """Horizontal grouped bars: mean per arm in each category (and overall) with 95% CI
    whiskers, at a fixed width and constant font sizes."""
    if not report.rows:
        return ""
    groups = [(c.name, i) for i, c in enumerate(report.categories)] + [("All categories", -1)]
    n_arms = len(report.rows)
    group_h = n_arms * (CHART_BAR_H + CHART_BAR_GAP) + CHART_GROUP_GAP
    width = CHART_LABEL_W + CHART_PLOT_W + CHART_VALUE_W
    height = CHART_TOP + len(groups) * group_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="chart chart-fixed" role="img" '
        f'aria-label="Mean rating per category and arm with 95% confidence intervals">'
    ]
    for s in (1, 2, 3, 4, 5):
        x = _x(s)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{CHART_TOP - 4}" y2="{height}" '
            f'stroke="#e2e6ec"/><text x="{x:.1f}" y="{CHART_TOP - 10}" '
            f'font-size="{CHART_SMALL_FONT}" text-anchor="middle" fill="#555">{s}</text>'
        )
    for g, (name, idx) in enumerate(groups):
        y0 = CHART_TOP + g * group_h
        short = name if len(name) <= CHART_LABEL_CHARS else name[: CHART_LABEL_CHARS - 1] + "…"
        weight = ' font-weight="600"' if idx < 0 else ""
        parts.append(
            f'<text x="{CHART_LABEL_W - 8}" y="{y0 + (group_h - CHART_GROUP_GAP) / 2 + 4:.1f}" '
            f'font-size="{CHART_FONT}" text-anchor="end" fill="#333"{weight}>'
            f"<title>{escape(name)}</title>{escape(short)}</text>"
        )
        for a, row in enumerate(report.rows):
            cell = row.overall if idx < 0 else row.cells[idx]
            parts.append(_bar(report, row, cell, name, y0 + a * (CHART_BAR_H + CHART_BAR_GAP)))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _bar(report: Report, row, cell, name: str, y: float) -> str:
    """One arm's bar in one category, its CI whisker and its value."""
    mean = cell.summary.mean
    if mean is None:
        return ""
    x1, mid = _x(mean), y + CHART_BAR_H / 2
    parts = [
        f'<rect x="{CHART_LABEL_W}" y="{y:.1f}" width="{max(x1 - CHART_LABEL_W, 1):.1f}" '
        f'height="{CHART_BAR_H}" fill="{_colour(report, row.arm)}">'
        f"<title>{escape(row.arm.label)} · {escape(name)}: {mean:.2f} "
        f"(n={cell.n_outputs})</title></rect>"
    ]
    lo, hi = cell.summary.ci_low, cell.summary.ci_high
    end = x1
    if lo is not None and hi is not None:
        xl, xh = _x(lo), _x(hi)
        end = max(end, xh)
        parts.append(
            f'<path d="M{xl:.1f} {mid:.1f}H{xh:.1f}M{xl:.1f} {mid - 3:.1f}v6'
            f'M{xh:.1f} {mid - 3:.1f}v6" stroke="#1a202c" stroke-width="1.2"/>'
        )
    parts.append(
        f'<text x="{min(end + 4, CHART_LABEL_W + CHART_PLOT_W + 4):.1f}" y="{mid + 4:.1f}" '
        f'font-size="{CHART_SMALL_FONT}" fill="#333">{mean:.2f}</text>'
    )
    return "".join(parts)


def size_chart(report: Report) -> str:
    """Overall mean per arm kind against model size (sizes in parameter order)."""
    if not report.several_sizes:
        return ""
    left, top, height, step = 34, 12, 180, 120
    width = left + step * (len(report.sizes) - 1) + 60
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {top + height + 40}" '
        f'class="chart" role="img" aria-label="Mean rating against model size">'
    ]
    for s in (1, 2, 3, 4, 5):
        y = _y(s, top, height)
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e6ec"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{s}</text>'
        )
    xs = [left + 20 + i * step for i in range(len(report.sizes))]
    for x, point in zip(xs, report.sizes, strict=True):
        parts.append(
            f'<text x="{x}" y="{top + height + 18}" font-size="11" text-anchor="middle">'
            f"{escape(point.size_tag)}</text>"
        )
    for kind, colour in ARM_COLOURS.items():
        pts = [
            (x, p.means[kind], p.ci.get(kind))
            for x, p in zip(xs, report.sizes, strict=True)
            if p.means.get(kind) is not None
        ]
        if not pts:
            continue
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x} {_y(m, top, height):.1f}"
            for i, (x, m, _ci) in enumerate(pts)
        )
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, m, ci in pts:
            parts.append(
                f'<circle cx="{x}" cy="{_y(m, top, height):.1f}" r="4" fill="{colour}">'
                f"<title>{kind}: {m:.2f}</title></circle>"
            )
            if ci and ci[0] is not None and ci[1] is not None:
                parts.append(
                    f'<path d="M{x} {_y(ci[0], top, height):.1f}V{_y(ci[1], top, height):.1f}" '
                    f'stroke="{colour}" stroke-width="1"/>'
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def judge_heatmap(report: Report) -> str:
    """5 × 5 counts of (rounded median human rating, rounded judge score): the diagonal
    is agreement. Rows: humans 5 (top) to 1; columns: judge 1 to 5."""
    if report.judge is None or not report.judge.agreement.n:
        return ""
    table = report.judge.agreement.table
    top = max(max(row) for row in table) or 1
    cell, left, head = 34, 58, 22
    size = 5 * cell
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {left + size + 8} '
        f'{head + size + 40}" class="chart heatmap" role="img" aria-label="Counts of outputs '
        f'by human rating and judge score">'
    ]
    for h in range(5, 0, -1):
        y = head + (5 - h) * cell
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4:.1f}" font-size="11" '
            f'text-anchor="end">{h}</text>'
        )
        for j in range(1, 6):
            count = table[h - 1][j - 1]
            x = left + (j - 1) * cell
            shade = 0.08 + 0.85 * count / top if count else 0.0
            stroke = ' stroke="#1a202c" stroke-width="1.5"' if h == j else ' stroke="#fff"'
            parts.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="rgba(43,108,176,{shade:.2f})"{stroke}>'
                f"<title>human {h}, judge {j}: {count}</title></rect>"
                f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" font-size="11" '
                f'text-anchor="middle" fill="{"#fff" if shade > 0.55 else "#1a202c"}">'
                f"{count or ''}</text>"
            )
    for j in range(1, 6):
        parts.append(
            f'<text x="{left + (j - 0.5) * cell:.1f}" y="{head - 6}" font-size="11" '
            f'text-anchor="middle">{j}</text>'
        )
    parts.append(
        f'<text x="{left + size / 2:.1f}" y="{head + size + 18}" font-size="11" '
        f'text-anchor="middle" fill="#555">judge score (columns)</text>'
        f'<text x="{left + size / 2:.1f}" y="{head + size + 32}" font-size="11" '
        f'text-anchor="middle" fill="#555">median human rating (rows)</text>'
    )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - numbers only
