"""Functions that mapping templates may call, documented in docs/mapping-format.md."""

import base64
import hashlib
import re
from datetime import datetime
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


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")


class ExactDecimal(float):
    """A decimal read from text: a float for templates, with the digits as sent in `text` (FHIR keeps 1.50 apart from 1.5).

    `loading.bundle.to_json` writes `text`; `json.dumps` writes the float.
    """

    text: str

    def __new__(cls, text: str):
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self):
        return (ExactDecimal, (self.text,))


def number(value):
    """Parse a number from text, as int when whole, else as ExactDecimal; raise ValueError on other text."""
    if value is None or value == "":
        return None
    text = str(value).strip().replace(",", ".")
    try:
        parsed = Decimal(text)
    except InvalidOperation:
        raise ValueError(t("problem.not_a_number", form=shape(str(value)))) from None
    if not parsed.is_finite():
        raise ValueError(t("problem.not_a_number", form=shape(str(value))))
    if parsed == parsed.to_integral_value() and "." not in text and "e" not in text.lower():
        return int(parsed)
    # A JSON number keeps the sender's digits; other forms (+1.5, .5) get Decimal's canonical text.
    return ExactDecimal(text if _JSON_NUMBER.fullmatch(text) else str(parsed))


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


def latest_instant(values):
    """Return the latest of export dates or date-times as a FHIR instant, or null for an empty list."""
    instants = [instant(value) for value in values or [] if value not in (None, "")]
    if not instants:
        return None
    return max(instants, key=lambda text: datetime.fromisoformat(text))


def linked(items, name):
    """Return the values that `name:value1,value2` items list for `name`: `linked(["a:R1,R2"], "a")` is ["R1", "R2"]."""
    values = []
    for item in items or []:
        label, _, listed = str(item).partition(":")
        if label.strip() == name:
            values.extend(value.strip() for value in listed.split(",") if value.strip())
    return values


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


def order_key(obr: dict, control_id: str, index: int) -> str:
    """Identify an order: OBR-3 filler number, else OBR-2 placer number, else MSH-10 with OBR-1."""
    return obr.get("3") or obr.get("2") or f"{control_id}-{obr.get('1') or index}"


def document_items(orders: list[dict], segments: dict, control_id: str) -> list[dict]:
    """List the encapsulated documents (OBX-2 ED) of a message, each with its order's key (null outside an order).

    CI-SIS messages also send the body of the secure e-mail as an ED OBX (code CORPSMAIL_PS,
    in the MetaDMPMSS system from CI-SIS 2.1): that is a note to the recipient, not a
    document, so it is left out.
    """
    order_of = {id(obx): (order_key(order["OBR"], control_id, index), order["OBR"])
                for index, order in enumerate(orders, start=1) for obx in order["OBX"]}
    items = []
    for obx in segments.get("OBX", []):
        if obx.get("2") != "ED" or obx.get("3.3") == "MetaDMPMSS" or obx.get("3.1", "").startswith("CORPSMAIL_"):
            continue
        order_id, obr = order_of.get(id(obx), (None, {}))
        if "3" not in obx and "4" not in obr:
            # Without OBX-3 or an order's OBR-4 the document has no type. One with data is rejected,
            # and an empty one is skipped because it carries nothing to lose.
            if obx.get("5.5"):
                raise ValueError(t("hl7v2.ed_no_type", line=obx["_line"]))
            continue
        items.append({"OBX": obx, "order_id": order_id, "OBR": obr, "set_id": obx.get("1") or str(obx["_line"])})
    return items


# ED-2 type of data (HL7 table 0191) as the MIME main type; ED-3 (table 0291) is the subtype.
_ED_MAIN_TYPES = {"AP": "application", "APPLICATION": "application", "NS": "application", "SD": "application",
                  "IM": "image", "IMAGE": "image", "SI": "image", "AU": "audio", "AUDIO": "audio",
                  "TEXT": "text", "TX": "text"}


def ed_attachment(obx: dict) -> dict:
    """Describe an OBX ED document as a FHIR Attachment without its content: type, size and SHA-1 of the decoded bytes.

    ED components: 2 type of data, 3 data subtype, 4 encoding (Base64, Hex or A for text), 5 data.
    """
    data = obx.get("5.5", "")
    main_type = _ED_MAIN_TYPES.get((obx.get("5.2") or "").upper())
    subtype = (obx.get("5.3") or "").lower()
    attachment = {"contentType": f"{main_type}/{subtype}" if main_type and subtype else None, "title": obx.get("3.2")}
    if not data:
        return attachment
    encoding = (obx.get("5.4") or "").upper()
    try:
        if encoding == "BASE64":
            # Senders often drop the final "=" padding; the data stays unambiguous without it.
            content = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        elif encoding == "HEX":
            content = bytes.fromhex(data)
        else:
            content = data.encode("utf-8")
    except ValueError:
        raise ValueError(t("hl7v2.ed_invalid", encoding=obx.get("5.4"), line=obx["_line"])) from None
    attachment.update(size=len(content), hash=base64.b64encode(hashlib.sha1(content).digest()).decode("ascii"))
    return attachment


def result_items(orders: list[dict], control_id: str) -> dict:
    """Split ORU order groups into reports, single observations and variant groups.

    An OBX group whose sub-id (OBX-4) contains a LOINC 69548-6 (Genetic variant
    assessment) becomes one variant with the group's other OBX as components;
    every other OBX becomes its own observation.
    """
    reports, observations, variants = [], [], []
    for index, order in enumerate(orders, start=1):
        obr = order["OBR"]
        order_id = order_key(obr, control_id, index)
        genomic = obr.get("4.1") == "51969-4"
        report = {"order_id": order_id, "OBR": obr, "results": []}
        seen: dict[str, int] = {}
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
                # A set ID sent twice in one order would map two OBX to one resource, so the later ones get a suffix.
                seen[set_id] = seen.get(set_id, 0) + 1
                set_id = set_id if seen[set_id] == 1 else f"{set_id}-{seen[set_id]}"
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

    def local_codings(concept, tables):
        """Translate the codings of a CodeableConcept that are in a hospital's local code system.

        `tables` lists {system, table} pairs: a coding of `system` is looked up in the
        ConceptMap `table`. Returns the translated codings, each once. A local code missing
        from its table gives nothing here, and `pull fhir` lists it in its end-of-run report.
        """
        translated = []
        for coding in (concept or {}).get("coding") or []:
            if not isinstance(coding, dict):
                continue
            for entry in tables or []:
                if coding.get("system") != entry.get("system"):
                    continue
                target = conceptmaps.translate(entry["table"], coding.get("code"))
                if target and target not in translated:
                    translated.append(target)
        return translated

    return {
        "ref": ref,
        "cwe": cwe,
        "obx_value": obx_value,
        "cx_identifiers": cx_identifiers,
        "xpn_names": xpn_names,
        "result_items": result_items,
        "document_items": document_items,
        "order_key": order_key,
        "ed_attachment": ed_attachment,
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
        "local_codings": local_codings,
        "latest_instant": latest_instant,
        "linked": linked,
    }
