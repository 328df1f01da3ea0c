"""Functions that mapping templates may call, documented in docs/mapping-format.md."""

import re
from decimal import Decimal, InvalidOperation

from ..connectors.fhir import reference_lookup_key
from ..privacy.pseudonym import Pseudonymiser
from .conceptmap import ConceptMaps
from ..i18n import t
from .dates import shape, InvalidDate, export_date, export_datetime, v2_date, v2_datetime, year


def group_by_sub_id(segments: list[dict]) -> list[dict]:
    """Group OBX segments by the part of OBX-4 before the first dot, in order of appearance.

    Clinical-genomics results send one variant per sub-id (`2a`), with its
    components as sibling OBX; `1a.a` belongs to the group `1a`.
    """
    groups: dict[str, dict] = {}
    for segment in segments:
        sub_id = segment.get("4", "").split(".")[0]
        group = groups.setdefault(sub_id, {"sub_id": sub_id, "by_code": {}, "segments": []})
        group["segments"].append(segment)
        group["by_code"].setdefault(segment.get("3.1", ""), segment)
    return list(groups.values())


def number(value):
    """Parse a number from text, as int when whole; raise ValueError on other text."""
    if value is None or value == "":
        return None
    text = str(value).strip().replace(",", ".")
    try:
        parsed = Decimal(text)
    except InvalidOperation:
        raise ValueError(t("problem.not_a_number", form=shape(str(value)))) from None
    return int(parsed) if parsed == parsed.to_integral_value() and "." not in text else float(text)


def instant(value):
    """Convert an export date or date-time to a FHIR instant; a date alone is taken at 12:00 Europe/Paris.

    Noon keeps the calendar day the same in Paris time and in UTC, so day
    counts between dates do not change when a reader converts to UTC.
    """
    result = export_datetime(value)
    if result is None or "T" in result:
        return result
    if len(result) < len("2024-01-31"):
        raise InvalidDate(t("problem.instant_needs_day", form=shape(str(value))))
    return export_datetime(f"{result}T12:00")


def first(*values):
    """Return the first value that is not null or empty, else the last one.

    JSON-e's `||` gives a boolean, so templates default with `first(x, "default")`.
    """
    for value in values:
        if value not in (None, "", [], {}):
            return value
    return values[-1] if values else None


def cx_identifiers(repetitions: list[dict] | None) -> list[dict]:
    """HL7 v2 CX repetitions (PID-3) as {value, type, system}: CX-1, CX-5, CX-4.2 else CX-4.1."""
    identifiers = []
    for cx in repetitions or []:
        identifiers.append({"value": cx.get("1"), "type": cx.get("5"), "system": cx.get("4.2") or cx.get("4.1") or ""})
    return identifiers


def xpn_names(*fields: list[dict] | None) -> list[str]:
    """List the family, given and second given names of HL7 v2 XPN fields (PID-5, PID-6)."""
    return [xpn[key] for repetitions in fields for xpn in repetitions or [] for key in ("1", "2", "3") if xpn.get(key)]


def result_items(orders: list[dict], control_id: str) -> dict:
    """Split ORU order groups into reports, single observations and variant groups.

    An OBX group whose sub-id (OBX-4) contains a LOINC 69548-6 (Genetic variant
    assessment) becomes one variant with the group's other OBX as components;
    every other OBX becomes its own observation.
    """
    reports, observations, variants = [], [], []
    for index, order in enumerate(orders, start=1):
        obr = order["OBR"]
        order_id = obr.get("3") or obr.get("2") or f"{control_id}-{obr.get('1') or index}"
        genomic = obr.get("4.1") == "51969-4"
        report = {"order_id": order_id, "OBR": obr, "results": []}
        for group in group_by_sub_id(order["OBX"]):
            assessment = group["by_code"].get("69548-6")
            if group["sub_id"] and assessment is not None:
                genomic = True
                components = [seg for seg in group["segments"] if seg is not assessment]
                variants.append({"order_id": order_id, "sub_id": group["sub_id"], "assessment": assessment, "components": components})
                report["results"].append(["variant", order_id, group["sub_id"]])
                continue
            for seg in group["segments"]:
                if seg.get("2") == "ED":
                    continue  # encapsulated documents are not observations
                set_id = seg.get("1") or str(seg["_line"])
                observations.append({"order_id": order_id, "set_id": set_id, "OBX": seg, "genomic": bool(group["sub_id"])})
                report["results"].append(["observation", order_id, set_id])
        report["genomic"] = genomic
        reports.append(report)
    return {"reports": reports, "observations": observations, "variants": variants}


def template_functions(pseudonymiser: Pseudonymiser, conceptmaps: ConceptMaps) -> dict:
    def ref(resource_type, *key):
        return f"{resource_type}/{pseudonymiser.resource_id(resource_type, *[str(part) for part in key])}"

    def code(table, value):
        return conceptmaps.translate(table, value)

    def code_only(table, value):
        coding = conceptmaps.translate(table, value)
        return coding.get("code") if coding else None

    def matches(value, pattern):
        return bool(re.search(pattern, value or ""))

    def cwe(segment, field_number):
        """HL7 v2 CE/CWE field as a FHIR Coding; the coding system name goes through a code table."""
        prefix = str(field_number)
        code_value = segment.get(f"{prefix}.1") or segment.get(prefix)
        if not code_value:
            return None
        system = conceptmaps.translate("v2-0396-coding-system", segment.get(f"{prefix}.3"))
        coding = {"system": system["code"] if system else None, "code": code_value, "display": segment.get(f"{prefix}.2")}
        return {key: value for key, value in coding.items() if value}

    def obx_value(segment):
        """Build the value[x] of an OBX, chosen by its value type (OBX-2), with its unit (OBX-6)."""
        value_type = segment.get("2", "")
        text = segment.get("5")
        if text is None:
            return {}
        if value_type == "NM":
            quantity = {"value": number(text), "unit": segment.get("6.2") or segment.get("6")}
            # Only a unit that OBX-6.3 names as UCUM is coded; local units stay text.
            if segment.get("6") and segment.get("6.3") == "UCUM":
                quantity.update({"system": "http://unitsofmeasure.org", "code": segment.get("6")})
            return {"valueQuantity": {key: value for key, value in quantity.items() if value is not None}}
        if value_type == "SN":
            comparator, value = segment.get("5.1"), segment.get("5.2")
            quantity = {"value": number(value), "unit": segment.get("6.2") or segment.get("6")}
            if comparator in ("<", "<=", ">=", ">"):
                quantity["comparator"] = comparator
            if segment.get("6") and segment.get("6.3") == "UCUM":
                quantity.update({"system": "http://unitsofmeasure.org", "code": segment.get("6")})
            quantity = {key: value for key, value in quantity.items() if value is not None}
            return {"valueQuantity": quantity}
        if value_type in ("CE", "CWE", "CNE", "CF"):
            if segment.get("5.2") or segment.get("5.3"):
                return {"valueCodeableConcept": {"coding": [cwe(segment, 5)]}}
            return {"valueCodeableConcept": {"text": text}}
        if value_type in ("DT", "TS", "DTM"):
            return {"valueDateTime": v2_datetime(text)}
        if value_type == "NR":
            return {"valueRange": {"low": {"value": number(segment.get("5.1"))}, "high": {"value": number(segment.get("5.2"))}}}
        return {"valueString": text}

    def fhir_ref(references, element, types):
        """Rewrite FHIR source Reference(s) to the SONCO resources that `ref(type, "fhir", key)` names.

        `references` is the record's table from the FHIR connector; `element` is one
        Reference or a list. A reference is dropped (null, or left out of the list) unless
        its target is a record of the same run and its type is in `types`, so that no
        output reference dangles: the server checks references on write.
        """
        def rewrite(reference):
            target = (references or {}).get(reference_lookup_key(reference))
            if not target or not target.get("record") or target.get("type") not in types:
                return None
            return {"reference": ref(target["type"], "fhir", target["key"])}

        if isinstance(element, list):
            return [rewritten for rewritten in (rewrite(item) for item in element) if rewritten]
        return rewrite(element) if element else None

    def fhir_resource(references, element):
        """Return the resource a FHIR Reference points at (in the input files or contained), or null."""
        target = (references or {}).get(reference_lookup_key(element)) if element else None
        return target.get("resource") if target else None

    return {
        "ref": ref,
        "cwe": cwe,
        "obx_value": obx_value,
        "cx_identifiers": cx_identifiers,
        "xpn_names": xpn_names,
        "result_items": result_items,
        "code": code,
        "code_only": code_only,
        "v2_datetime": v2_datetime,
        "v2_date": v2_date,
        "date": export_date,
        "datetime": export_datetime,
        "instant": instant,
        "year": year,
        "number": number,
        "matches": matches,
        "first": first,
        "group_by_sub_id": group_by_sub_id,
        "fhir_ref": fhir_ref,
        "fhir_resource": fhir_resource,
    }
