"""Dates and times from HL7 v2 and from French exports, as FHIR date or dateTime.

A time without an offset is taken in the configured zone (Europe/Paris by
default), as French feeds send local time.
"""

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from ..i18n import t

DEFAULT_ZONE = "Europe/Paris"

_V2_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?(?P<f>\.\d{1,4})?"
    r"(?P<tz>[+-]\d{2}(?:\d{2})?)?$"
)
_FR_DATE = re.compile(r"^(?P<d>\d{1,2})/(?P<mo>\d{1,2})/(?P<y>\d{4})(?:[ T](?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?)?$")
_ISO = re.compile(r"^(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})(?:[T ](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:?\d{2})?)?)?)?$")


class InvalidDate(ValueError):
    pass


def shape(value: str) -> str:
    """Return the form of a value without its content: digits as 9, letters as A.

    Error messages show this instead of the value, since a bad date may be
    a birth date.
    """
    return re.sub(r"[^\W\d_]", "A", re.sub(r"\d", "9", value))


def _offset(tz: str) -> str:
    if tz == "Z":
        return "+00:00"
    sign, digits = tz[0], tz[1:].replace(":", "")
    digits = digits.ljust(4, "0")
    return f"{sign}{digits[:2]}:{digits[2:]}"


def _compose(parts: dict, zone: str) -> str:
    year, month, day = parts["y"], parts.get("mo"), parts.get("d")
    if not month:
        return year
    if not day:
        return f"{year}-{int(month):02d}"
    date = f"{year}-{int(month):02d}-{int(day):02d}"
    hour = parts.get("h")
    if hour is None:
        datetime(int(year), int(month), int(day))  # raises on 2024-02-30
        return date
    minute = parts.get("mi") or "00"
    second = parts.get("s") or "00"
    fraction = parts.get("f") or ""
    local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    if parts.get("tz"):
        offset = _offset(parts["tz"])
    else:
        offset = local.replace(tzinfo=ZoneInfo(zone)).strftime("%z")
        offset = f"{offset[:3]}:{offset[3:]}"
    return f"{date}T{int(hour):02d}:{minute}:{second}{fraction}{offset}"


def v2_datetime(value: str | None, zone: str = DEFAULT_ZONE) -> str | None:
    """HL7 v2 TS/DTM (any precision, optional offset) to FHIR date or dateTime."""
    if not value:
        return None
    match = _V2_TS.match(value.strip())
    if not match:
        raise InvalidDate(t("problem.invalid_v2_timestamp", form=shape(value)))
    try:
        return _compose(match.groupdict(), zone)
    except ValueError as error:
        raise InvalidDate(t("problem.invalid_date", form=shape(value), reason=error)) from None


def v2_date(value: str | None) -> str | None:
    """HL7 v2 date to FHIR date, dropping any time part."""
    if not value:
        return None
    return v2_datetime(value[:8])


def export_datetime(value: str | None, zone: str = DEFAULT_ZONE) -> str | None:
    """Convert a date or date-time from an export to FHIR: 'JJ/MM/AAAA[ HH:MM[:SS]]' or ISO 8601."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    match = _FR_DATE.match(text) or _ISO.match(text)
    if not match:
        raise InvalidDate(t("problem.invalid_export_date", form=shape(text)))
    try:
        return _compose(match.groupdict(), zone)
    except ValueError as error:
        raise InvalidDate(t("problem.invalid_date", form=shape(text), reason=error)) from None


def export_date(value: str | None) -> str | None:
    result = export_datetime(value)
    return result[:10] if result else None


def year(value: str | None) -> str | None:
    """Return the year of an HL7, ISO or French date: the only part of a birth date the cohort keeps."""
    if not value:
        return None
    text = str(value).strip()
    match = re.search(r"(\d{4})", text if "/" not in text else text.split("/")[-1])
    return match.group(1) if match else None
