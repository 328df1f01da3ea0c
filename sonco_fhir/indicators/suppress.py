"""Small-cell suppression, applied to the cells before any output is written.

Rule, applied to each indicator separately:
1. Primary suppression: a cell with at least one and fewer than `threshold`
   distinct patients is suppressed. A cell with no patient shows nothing
   about anyone and stays.
2. When the overall cell is suppressed, every cell of the indicator is.
3. Complementary suppression works within one dimension (the strata of
   `lab`, of `month`...). When exactly one cell with patients is suppressed
   there, the published cell with the fewest patients is suppressed too. So
   the suppressed cell cannot be derived as the overall count minus the others.

A suppressed cell keeps its dimension and stratum, has `suppressed` True,
and every count and statistic set to None.
"""

import os

from ..errors import ExitCode, SoncoError
from ..i18n import t

DEFAULT_THRESHOLD = 10
THRESHOLD_VARIABLE = "SONCO_SUPPRESSION_THRESHOLD"
OVERALL = "*"
_HIDDEN = ("patients", "count", "excluded", "median", "p25", "p75", "p90", "numerator", "denominator")


def threshold_from(option: int | None) -> int:
    """Return the threshold of the `--suppression-threshold` option, else SONCO_SUPPRESSION_THRESHOLD, else 10."""
    if option is not None:
        value, source = option, "--suppression-threshold"
    else:
        text = os.environ.get(THRESHOLD_VARIABLE)
        if text is None:
            return DEFAULT_THRESHOLD
        source = THRESHOLD_VARIABLE
        try:
            value = int(text)
        except ValueError:
            raise SoncoError(t("indicators.invalid_threshold", value=text, source=source), ExitCode.CONFIGURATION) from None
    if value < 0:
        raise SoncoError(t("indicators.invalid_threshold", value=value, source=source), ExitCode.USAGE)
    return value


def _hide(cell: dict) -> dict:
    hidden = {**cell, "suppressed": True}
    for name in _HIDDEN:
        if name in hidden:
            hidden[name] = None
    return hidden


def suppress(cells: list[dict], threshold: int) -> list[dict]:
    """Return copies of one indicator's cells (see sql.aggregate) with the suppression rule applied."""
    suppressed = {index for index, cell in enumerate(cells) if 0 < cell["patients"] < threshold}
    overall = [index for index, cell in enumerate(cells) if cell["dimension"] == OVERALL]
    if any(index in suppressed for index in overall):
        suppressed = set(range(len(cells)))

    for dimension in {cell["dimension"] for cell in cells} - {OVERALL}:
        members = [index for index, cell in enumerate(cells) if cell["dimension"] == dimension and cell["patients"] > 0]
        hidden = [index for index in members if index in suppressed]
        published = [index for index in members if index not in suppressed]
        if len(hidden) == 1 and published:
            smallest = min(published, key=lambda index: (cells[index]["patients"], cells[index]["stratum"]))
            suppressed.add(smallest)

    return [_hide(cell) if index in suppressed else {**cell, "suppressed": False} for index, cell in enumerate(cells)]
