"""The HTML report: one self-contained page (inline CSS and SVG, no script, no external resource) that opens offline.

It shows the delay distributions per lab, the monthly trends of the delays,
the stratified tables, the data completeness and the definitions, in the
current language. Only suppressed cells (see suppress.py) reach it.
"""

from html import escape

from .. import i18n
from . import output
from .catalogue import BY_ID, CATALOGUE, DELAY, SECTIONS
from .run import IndicatorRun

OVERALL = "*"
# Colours of the chart series, readable on white and distinct in greyscale.
PALETTE = ("#1f5fa8", "#d0661b", "#2e8b57", "#8e3fa8", "#b8860b", "#c0392b", "#17808a", "#555555")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 70rem;
       color: #1d1d1f; line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #1f5fa8; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 0.4rem; }
p.note { color: #555; font-size: 0.9rem; margin: 0.2rem 0 0.6rem; }
table { border-collapse: collapse; font-size: 0.88rem; margin-bottom: 0.8rem; }
th, td { border: 1px solid #d5d5d8; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eef2f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.suppressed td { color: #888; font-style: italic; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.chart { border: 1px solid #e2e2e6; border-radius: 4px; padding: 0.4rem; background: #fcfcfd; }
.chart h4 { margin: 0 0 0.3rem; font-size: 0.9rem; }
svg text { font-family: inherit; font-size: 11px; fill: #333; }
dl dt { font-weight: 600; margin-top: 0.6rem; }
dl dd { margin-left: 1rem; }
"""


def _cells_of(run: IndicatorRun, measure: str, dimension: str) -> list[dict]:
    return [cell for cell in run.cells[measure] if cell["dimension"] == dimension]


def _overall(run: IndicatorRun, measure: str) -> dict:
    return _cells_of(run, measure, OVERALL)[0]


def _nice_maximum(value: float) -> float:
    """Round an axis maximum up to 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= value:
        power *= 10
    for factor in (1, 2, 5, 10):
        if factor * power >= value:
            return factor * power
    return 10 * power


def _box_plot(title: str, cells: list[dict]) -> str:
    """SVG box plot of one delay: one row per published stratum, box p25–p75, median line, whisker to p90."""
    rows = [cell for cell in cells if not cell["suppressed"] and cell["median"] is not None]
    if not rows:
        return ""
    maximum = _nice_maximum(max(cell["p90"] for cell in rows))
    left, width, row_height = 110, 300, 26
    height = row_height * len(rows) + 30
    parts = [f'<svg width="{left + width + 20}" height="{height}" role="img" aria-label="{escape(title)}">']
    for tick in range(5):
        x = left + width * tick / 4
        parts.append(f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 22}" stroke="#e0e0e4"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{output.localized_number(maximum * tick / 4)}</text>')
    for index, cell in enumerate(rows):
        y = 8 + index * row_height

        def scale(value: float) -> float:
            return left + width * value / maximum

        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(output.stratum_label(cell["stratum"]))}</text>')
        parts.append(f'<line x1="{scale(cell["p75"]):.1f}" y1="{y + 9}" x2="{scale(cell["p90"]):.1f}" y2="{y + 9}" stroke="#333"/>')
        parts.append(f'<line x1="{scale(cell["p90"]):.1f}" y1="{y + 3}" x2="{scale(cell["p90"]):.1f}" y2="{y + 15}" stroke="#333"/>')
        box_width = max(scale(cell["p75"]) - scale(cell["p25"]), 1.5)
        parts.append(f'<rect x="{scale(cell["p25"]):.1f}" y="{y}" width="{box_width:.1f}" height="18" '
                     f'fill="{PALETTE[index % len(PALETTE)]}" fill-opacity="0.35" stroke="{PALETTE[index % len(PALETTE)]}"/>')
        parts.append(f'<line x1="{scale(cell["median"]):.1f}" y1="{y}" x2="{scale(cell["median"]):.1f}" y2="{y + 18}" '
                     f'stroke="#111" stroke-width="2.5"/>')
    parts.append("</svg>")
    return f'<div class="chart"><h4>{escape(title)}</h4>{"".join(parts)}</div>'


def _trend_chart(run: IndicatorRun) -> str:
    """SVG line chart of the median of each delay per prescription month, published cells only."""
    series = []
    for indicator in (item for item in CATALOGUE if item.kind == DELAY):
        points = [(cell["stratum"], cell["median"]) for cell in _cells_of(run, indicator.id, "month")
                  if not cell["suppressed"] and cell["median"] is not None and cell["stratum"] != "?"]
        if points:
            series.append((indicator, dict(points)))
    months = sorted({month for _, points in series for month in points})
    if not months:
        return f'<p class="note">{escape(i18n.t("html.no_data"))}</p>'
    maximum = _nice_maximum(max(value for _, points in series for value in points.values()))
    left, top, width, height = 50, 10, 620, 220
    step = width / max(len(months) - 1, 1)
    parts = [f'<svg width="{left + width + 30}" height="{top + height + 40}" role="img" aria-label="{escape(i18n.t("html.trends"))}">']
    for tick in range(5):
        y = top + height - height * tick / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#e0e0e4"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{output.localized_number(maximum * tick / 4)}</text>')
    for index, month in enumerate(months):
        parts.append(f'<text x="{left + index * step:.1f}" y="{top + height + 16}" text-anchor="middle">{escape(month)}</text>')
    legend = []
    for number, (indicator, points) in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        coordinates = [(left + months.index(month) * step, top + height - height * value / maximum)
                       for month, value in sorted(points.items())]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in coordinates)
        legend.append(f'<span style="color:{colour}">■</span> {escape(output.label(indicator))}')
    parts.append("</svg>")
    return f'<div class="chart">{"".join(parts)}<p class="note">{"<br>".join(legend)}</p></div>'


def _completeness_chart(run: IndicatorRun) -> str:
    """SVG bar chart of the overall completeness of each milestone."""
    bars = []
    for indicator in (item for item in CATALOGUE if item.id.startswith("sonco-completeness-")):
        cell = _overall(run, indicator.id)
        bars.append((indicator, output.cell_value(indicator, cell), cell))
    left, width, row_height = 330, 300, 22
    parts = [f'<svg width="{left + width + 120}" height="{row_height * len(bars) + 10}" role="img" '
             f'aria-label="{escape(i18n.t("html.completeness"))}">']
    for index, (indicator, value, cell) in enumerate(bars):
        y = 4 + index * row_height
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(output.label(indicator))}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width}" height="16" fill="#eef2f8"/>')
        if value is not None:
            parts.append(f'<rect x="{left}" y="{y}" width="{width * value:.1f}" height="16" fill="#2e8b57"/>')
        parts.append(f'<text x="{left + width + 6}" y="{y + 13}">{escape(output.value_text(indicator, cell))}</text>')
    parts.append("</svg>")
    return f'<div class="chart">{"".join(parts)}</div>'


def _indicator_table(run: IndicatorRun, measure: str) -> str:
    indicator = BY_ID[measure]
    header = "".join(f"<th>{escape(i18n.t(key))}</th>" for key in (
        "indicator.column.dimension", "indicator.column.stratum", "indicator.column.value",
        "indicator.column.detail", "indicator.column.patients"))
    rows = []
    for cell in run.cells[measure]:
        patients = "—" if cell["patients"] is None else str(cell["patients"])
        css = ' class="suppressed"' if cell["suppressed"] else ""
        rows.append(
            f"<tr{css}><td>{escape(output.dimension_label(cell['dimension']))}</td>"
            f"<td>{escape(output.stratum_label(cell['stratum']))}</td>"
            f'<td class="number">{escape(output.value_text(indicator, cell))}</td>'
            f"<td>{escape(output.detail_text(indicator, cell, run.threshold))}</td>"
            f'<td class="number">{patients}</td></tr>'
        )
    return (f'<h4 id="{escape(measure)}">{escape(output.label(indicator))}</h4>'
            f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _definitions() -> str:
    items = []
    for indicator in CATALOGUE:
        unit = i18n.t(f"indicator.unit.{indicator.unit}")
        items.append(f"<dt>{escape(output.label(indicator))} <code>{escape(indicator.id)}</code></dt>"
                     f"<dd>{escape(i18n.t(f'indicator.{indicator.id}.definition'))} "
                     f"{escape(i18n.t('html.population', unit=unit))}</dd>")
    return f"<dl>{''.join(items)}</dl>"


def render_html(run: IndicatorRun) -> str:
    """Return the whole report as one HTML document in the current language."""
    t = i18n.t
    dimensions = ", ".join(output.dimension_label(name) for name in run.dimensions) or "—"
    body = [
        f"<h1>{escape(t('indicators.title'))}</h1>",
        f'<p class="note">{escape(t("html.subtitle" if run.threshold > 1 else "html.subtitle_unsuppressed", start=run.period[0], end=run.period[1], dimensions=dimensions, threshold=run.threshold))}</p>',
        f'<p class="note">{escape(t("html.generated"))}</p>',
        f"<h2>{escape(t('html.distribution'))}</h2>",
        f'<p class="note">{escape(t("html.distribution_note"))}</p>',
        '<div class="charts">',
    ]
    for indicator in (item for item in CATALOGUE if item.kind == DELAY):
        cells = _cells_of(run, indicator.id, OVERALL) + _cells_of(run, indicator.id, "lab")
        body.append(_box_plot(output.label(indicator), cells))
    body += [
        "</div>",
        f"<h2>{escape(t('html.trends'))}</h2>",
        f'<p class="note">{escape(t("html.trends_note"))}</p>',
        _trend_chart(run),
        f"<h2>{escape(t('html.completeness'))}</h2>",
        _completeness_chart(run),
        f"<h2>{escape(t('html.tables'))}</h2>",
        f'<p class="note">{escape(t("html.suppression" if run.threshold > 1 else "html.suppression_off", threshold=run.threshold))}</p>',
    ]
    for section in SECTIONS:
        body.append(f"<h3>{escape(t(f'indicator.section.{section}'))}</h3>")
        body.extend(_indicator_table(run, indicator.id) for indicator in CATALOGUE if indicator.section == section)
    body += [
        f"<h2>{escape(t('html.definitions'))}</h2>",
        f'<p class="note">{escape(t("html.days_counting"))}</p>',
        _definitions(),
    ]
    return (f'<!DOCTYPE html>\n<html lang="{i18n.language()}">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{escape(t('indicators.title'))}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
