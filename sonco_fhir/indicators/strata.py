"""Stratification dimensions (`--by`) and the reporting period (`--period`).

Every population member belongs to one prescription, and its strata are
those of the prescription (columns of the request_milestone table). The
period dimensions and the `--period` filter use the prescription day in
Europe/Paris.
"""

import calendar
import re
from dataclasses import dataclass
from datetime import date

from ..errors import ExitCode, SoncoError
from ..i18n import t

UNKNOWN = "?"

# SQL expression of each dimension over request_milestone (alias m).
DIMENSIONS = {
    "lab": "m.lab",
    "preindication": "m.preindication",
    "cancer_type": "m.cancer_type",
    "sample_type": "m.sample_type",
    "hospital": "m.hospital",
    "month": f"coalesce(strftime(m.prescribed_day, '%Y-%m'), '{UNKNOWN}')",
    "quarter": f"coalesce(strftime(m.prescribed_day, '%Y') || '-Q' || quarter(m.prescribed_day), '{UNKNOWN}')",
    "year": f"coalesce(strftime(m.prescribed_day, '%Y'), '{UNKNOWN}')",
}
DEFAULT_DIMENSIONS = ("lab",)

_YEAR = re.compile(r"^(\d{4})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Period:
    """Inclusive range of prescription days."""

    start: date
    end: date

    def sql_condition(self, column: str) -> str:
        return f"{column} BETWEEN DATE '{self.start.isoformat()}' AND DATE '{self.end.isoformat()}'"


def parse_dimensions(text: str | None) -> tuple[str, ...]:
    """Parse `--by`: dimension names separated by commas, kept in the given order without repeats."""
    if not text:
        return DEFAULT_DIMENSIONS
    names: list[str] = []
    for name in (part.strip() for part in text.split(",")):
        if name not in DIMENSIONS:
            raise SoncoError(t("indicators.invalid_dimension", value=name, allowed=", ".join(DIMENSIONS)), ExitCode.USAGE)
        if name not in names:
            names.append(name)
    return tuple(names)


def _bounds(text: str) -> tuple[date, date]:
    """Return the first and last day of a year, quarter, month or day written as in `--period`."""
    if match := _YEAR.match(text):
        year = int(match.group(1))
        return date(year, 1, 1), date(year, 12, 31)
    if match := _QUARTER.match(text):
        year, quarter = int(match.group(1)), int(match.group(2))
        last_month = quarter * 3
        return date(year, last_month - 2, 1), date(year, last_month, calendar.monthrange(year, last_month)[1])
    if match := _MONTH.match(text):
        year, month = int(match.group(1)), int(match.group(2))
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    if _DAY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise SoncoError(t("indicators.invalid_period", value=text), ExitCode.USAGE) from None
        return day, day
    raise SoncoError(t("indicators.invalid_period", value=text), ExitCode.USAGE)


def parse_period(text: str | None) -> Period | None:
    """Parse `--period`: 2024, 2024-Q1, 2024-03, 2024-03-15, or a range START..END of those forms (both ends included)."""
    if not text:
        return None
    if ".." in text:
        first, _, last = text.partition("..")
        start, end = _bounds(first.strip())[0], _bounds(last.strip())[1]
        if end < start:
            raise SoncoError(t("indicators.period_reversed", value=text), ExitCode.USAGE)
        return Period(start, end)
    start, end = _bounds(text.strip())
    return Period(start, end)
