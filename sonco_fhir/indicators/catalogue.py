"""The catalogue of SONCO indicators: one entry per Measure, with its SQL query and its scoring.

Labels and definitions shown to users are in the locale fragments
(`indicator.<id>` and `indicator.<id>.definition`). The Measure resources
of `profiles/measures/` are built from this catalogue by `measures.py`.
"""

from dataclasses import dataclass

# Kinds of indicator. A delay and a count are continuous-variable Measures
# scored by the median; a share is a proportion Measure.
DELAY = "delay"
COUNT = "count"
SHARE = "share"
CONTINUOUS_KINDS = (DELAY, COUNT)

# Sections of the catalogue, in the order of the outputs.
SECTIONS = ("delay", "information", "quality", "pathway")


@dataclass(frozen=True)
class Indicator:
    id: str  # Measure.id, also the last part of its canonical URL
    query: str  # file stem in queries/
    kind: str  # DELAY, COUNT or SHARE
    section: str  # one of SECTIONS
    unit: str  # what one population member is: request, patient, report or specimen
    improvement: str | None = None  # measure-improvement-notation: increase or decrease

    @property
    def continuous(self) -> bool:
        return self.kind in CONTINUOUS_KINDS


def _delay(name: str) -> Indicator:
    return Indicator(f"sonco-{name}", name.replace("-", "_"), DELAY, "delay", "request", "decrease")


def _completeness(milestone: str) -> Indicator:
    name = f"completeness-{milestone}"
    return Indicator(f"sonco-{name}", name.replace("-", "_"), SHARE, "information", "request", "increase")


CATALOGUE: tuple[Indicator, ...] = (
    _delay("delay-prescription-validation"),
    _delay("delay-validation-reception"),
    _delay("delay-reception-sequencing"),
    _delay("delay-reception-report"),
    _delay("delay-prescription-report"),
    _delay("delay-report-rcp-aval"),
    _delay("delay-rcp-aval-treatment"),
    _delay("delay-prescription-treatment"),
    _completeness("prescription"),
    _completeness("validation"),
    _completeness("reception"),
    _completeness("sequencing"),
    _completeness("report"),
    _completeness("rcp-aval"),
    _completeness("treatment"),
    Indicator("sonco-share-actionable-report", "share_actionable_report", SHARE, "information", "report", "increase"),
    Indicator("sonco-share-therapeutic-recommendation", "share_therapeutic_recommendation", SHARE, "information", "patient", "increase"),
    Indicator("sonco-share-recommended-treatment", "share_recommended_treatment", SHARE, "information", "patient", "increase"),
    Indicator("sonco-share-trial-inclusion", "share_trial_inclusion", SHARE, "information", "patient", "increase"),
    Indicator("sonco-share-germline-oncogenetics", "share_germline_oncogenetics", SHARE, "information", "patient", "increase"),
    Indicator("sonco-rate-technical-failure", "rate_technical_failure", SHARE, "quality", "request", "decrease"),
    Indicator("sonco-rate-resampling", "rate_resampling", SHARE, "quality", "request", "decrease"),
    Indicator("sonco-share-ffpe", "share_ffpe", SHARE, "quality", "specimen", None),
    Indicator("sonco-share-low-cellularity", "share_low_cellularity", SHARE, "quality", "specimen", "decrease"),
    Indicator("sonco-share-amended-reports", "share_amended_reports", SHARE, "quality", "report", "decrease"),
    Indicator("sonco-lines-before-report", "lines_before_report", COUNT, "pathway", "request", None),
    Indicator("sonco-lines-after-report", "lines_after_report", COUNT, "pathway", "request", None),
    Indicator("sonco-share-treatment-changed", "share_treatment_changed", SHARE, "pathway", "patient", None),
)

BY_ID = {indicator.id: indicator for indicator in CATALOGUE}
