"""Printable forms of the suppressed cells: localised text for the table and the HTML report, flat records for CSV and JSON."""

from .. import i18n
from .catalogue import BY_ID, DELAY, Indicator

OVERALL = "*"
UNKNOWN = "?"

# Columns of the CSV output and keys of the JSON records, in order.
RECORD_FIELDS = ("indicator", "label", "section", "dimension", "stratum", "suppressed", "patients", "value",
                 "numerator", "denominator", "count", "excluded", "median", "p25", "p75", "p90")


def localized_number(value: float, decimals: int | None = None) -> str:
    """Format a number with `decimals` decimals, or at most 4 when None, with a decimal comma in French."""
    text = f"{round(value, 4):g}" if decimals is None else f"{value:.{decimals}f}"
    return text.replace(".", ",") if i18n.language() == "fr" else text


def label(indicator: Indicator) -> str:
    return i18n.t(f"indicator.{indicator.id}")


def dimension_label(dimension: str) -> str:
    return i18n.t("indicator.overall") if dimension == OVERALL else i18n.t(f"indicator.dimension.{dimension}")


def stratum_label(stratum: str) -> str:
    if stratum == OVERALL:
        return i18n.t("indicator.overall")
    return i18n.t("indicator.unknown") if stratum == UNKNOWN else stratum


def cell_value(indicator: Indicator, cell: dict) -> float | None:
    """Return the cell's result: the median of a delay or count, the proportion (0 to 1) of a share."""
    if cell["suppressed"]:
        return None
    if indicator.continuous:
        return cell["median"]
    return cell["numerator"] / cell["denominator"] if cell["denominator"] else None


def value_text(indicator: Indicator, cell: dict) -> str:
    value = cell_value(indicator, cell)
    if value is None:
        return "—"
    if indicator.kind == DELAY:
        return i18n.t("indicator.days", value=localized_number(value))
    if indicator.continuous:
        return localized_number(value)
    return i18n.t("indicator.percent", value=localized_number(value * 100, decimals=1))


def detail_text(indicator: Indicator, cell: dict, threshold: int) -> str:
    if cell["suppressed"]:
        return i18n.t("indicator.suppressed", threshold=threshold)
    if not indicator.continuous:
        return i18n.t("indicator.share_detail", numerator=cell["numerator"], denominator=cell["denominator"])
    prefix = "delay" if indicator.kind == DELAY else "count"
    text = i18n.t(f"indicator.{prefix}_detail", count=cell["count"], excluded=cell["excluded"])
    if cell["p25"] is None:
        return text
    spread = i18n.t(f"indicator.{prefix}_spread", p25=localized_number(cell["p25"]), p75=localized_number(cell["p75"]),
                    p90=localized_number(cell["p90"]))
    return f"{text}, {spread}"


def records(cells_by_measure: dict[str, list[dict]]) -> list[dict]:
    """Flatten the cells into one record per indicator and stratum, with RECORD_FIELDS as keys."""
    flat = []
    for measure, cells in cells_by_measure.items():
        indicator = BY_ID[measure]
        for cell in cells:
            record = {name: cell.get(name) for name in RECORD_FIELDS}
            record.update(indicator=measure, label=label(indicator), section=indicator.section,
                          value=cell_value(indicator, cell))
            flat.append(record)
    return flat
