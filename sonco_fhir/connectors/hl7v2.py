"""HL7 v2 files: split into messages, parse with python-hl7, flatten for templates.

Templates address fields with HL7 locations relative to a segment. In
`PID["3.4.2"]` the key is field 3, component 4, subcomponent 2 of the
first repetition. `PID["3[]"]` lists every repetition, each with keys
relative to the field (`"1"`, `"4.2"`). Empty values are left out, so a
template tests presence with `"7" in PID`. A field sent as `""` (the HL7
delete value) is left out too, and its location is listed in the
segment's `_deleted`, so a template can tell "delete" from "not sent".
"""

from pathlib import Path

import hl7

from ..errors import Problem
from ..i18n import t
from .base import ReadResult, SourceRecord, expand_paths

SUFFIXES = (".hl7", ".er7", ".txt", ".msg")
_BOM = "\ufeff"
# Segments that open a new order/observation group in ORU, OML, ORM and MDM.
_GROUP_OPENERS = ("OBR",)
_GROUP_MEMBERS = ("OBX", "NTE", "SPM", "TQ1", "PRT", "CTI")
# Segments that templates may name directly: an empty object when the message lacks them,
# so `PV1["19"]` gives null instead of an error.
ALWAYS_PRESENT = ("EVN", "PID", "PD1", "PV1", "PV2", "MRG", "ORC", "OBR", "TXA", "SPM", "ZBE", "ZFD", "ZFA")
# HL7 v2 delete value: the receiver removes what it holds for the field.
DELETE_VALUE = '""'
# HL7 v2 versions of MSH-12.1 that this connector reads; the segments it maps are the same in all of them.
VERSIONS = ("2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2", "2.9")
# MSH-18 character sets (HL7 table 0211) and their Python codecs. An empty MSH-18 means ASCII in the
# standard, but senders often send UTF-8 or Latin-1 without saying so: see decode_message.
CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1", "8859/2": "iso8859-2", "8859/3": "iso8859-3", "8859/4": "iso8859-4",
    "8859/5": "iso8859-5", "8859/6": "iso8859-6", "8859/7": "iso8859-7", "8859/8": "iso8859-8",
    "8859/9": "iso8859-9", "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
}


class MessageError(ValueError):
    """A message that cannot be parsed, with a reason that quotes no field value and, when known, the fix."""

    def __init__(self, reason: str, fix: str | None = None):
        super().__init__(reason)
        self.fix = fix


def split_messages(text: str) -> list[tuple[int, str]]:
    """Split a file's text into (first line number, message) pairs.

    Accepts CR, LF and CRLF separators, a UTF-8 byte-order mark, several
    messages in one file, and FHS/BHS batch envelopes (dropped).
    """
    text = text.lstrip(_BOM)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    messages: list[tuple[int, list[str]]] = []
    for number, line in enumerate(lines, start=1):
        line = line.lstrip(_BOM)
        if not line.strip():
            continue
        tag = line[:3]
        if tag in ("FHS", "BHS", "FTS", "BTS"):
            continue
        if tag == "MSH" or not messages:
            messages.append((number, [line]))
        else:
            messages[-1][1].append(line)
    return [(start, "\r".join(segments)) for start, segments in messages]


def _msh_field(text: str, number: int) -> str:
    """Return MSH-`number` of a message's first line as raw text (MSH-1 is the field separator)."""
    if len(text) < 4:
        return ""
    fields = text.split("\r", 1)[0].split(text[3])
    return fields[number - 1] if number - 1 < len(fields) else ""


def charset_codec(text: str) -> str | None:
    """Return the codec of the message's MSH-18 (first repetition), None when empty; raise MessageError when unknown."""
    repetition_separator = text[5] if len(text) > 5 else "~"
    declared = _msh_field(text, 18).split(repetition_separator)[0].strip()
    if not declared:
        return None
    codec = CHARSETS.get(declared.upper())
    if codec is None:
        raise MessageError(t("hl7v2.charset_unknown", charset=declared[:20], known=", ".join(CHARSETS)), t("hl7v2.charset.fix"))
    return codec


def decode_message(raw_text: str, start_line: int) -> str:
    """Decode one message read as Latin-1 (one character per byte) with the character set of its MSH-18.

    Without MSH-18, the message is read as UTF-8 when it is valid UTF-8, else as Latin-1, which decodes any byte.
    """
    data = raw_text.encode("latin-1")
    codec = charset_codec(raw_text)
    if codec is None:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return raw_text
    try:
        return data.decode(codec)
    except UnicodeDecodeError as error:
        line = start_line + data[: error.start].count(b"\r")
        raise MessageError(t("hl7v2.charset_mismatch", charset=codec,
                             byte=f"0x{data[error.start]:02X}", line=line), t("hl7v2.charset.fix")) from None


def _unescape(message: hl7.Message, text: str) -> str:
    # python-hl7 decodes with the message's own MSH-2 characters; `\.br\` gives CR, a line break in FHIR text.
    return message.unescape(text).replace("\r", "\n")


def _location_keys(number: int) -> tuple[str, str, str, str]:
    """Return the keys that start with field or component `number`: "3", "3.1", "3.1.1" and "3[]"."""
    return str(number), f"{number}.1", f"{number}.1.1", f"{number}[]"


# Built once, because every segment needs them. Standard segments have fewer than 100 fields.
_LOCATION_KEYS = [_location_keys(number) for number in range(100)]


def _flatten_repetition(message: hl7.Message, repetition, deleted: list[str], prefix: str) -> dict[str, str]:
    flat: dict[str, str] = {}
    escape = message.esc
    # python-hl7 gives a text without separators as a str, else a list: components, then subcomponents.
    components = (repetition,) if isinstance(repetition, str) else repetition
    for c_index, component in enumerate(components, start=1):
        keys = _LOCATION_KEYS[c_index] if c_index < len(_LOCATION_KEYS) else _location_keys(c_index)
        subcomponents = (component,) if isinstance(component, str) else component
        for s_index, sub in enumerate(subcomponents, start=1):
            if not sub or not isinstance(sub, str):
                continue
            if sub == DELETE_VALUE:
                if s_index > 1:
                    deleted.append(f"{prefix}.{c_index}.{s_index}")
                else:
                    deleted.append(f"{prefix}.{c_index}" if c_index > 1 else prefix)
                continue
            value = _unescape(message, sub) if escape in sub else sub
            if s_index == 1:
                flat[keys[0]] = value
                flat[keys[1]] = value
            else:
                flat[f"{c_index}.{s_index}"] = value
    return flat


def _field_text(field) -> str | None:
    """Return the text of a field that has no repetition, component or subcomponent separator, else None."""
    if isinstance(field, str):
        return field
    if len(field) == 1:
        # Unpacking iterates in C: python-hl7's containers index through a Python __getitem__.
        (text,) = field
        if isinstance(text, str):
            return text
    return None


def flatten_segment(message: hl7.Message, segment, line: int) -> dict:
    """Flatten one python-hl7 segment into location keys (see the module docstring)."""
    fields = iter(segment)
    name = str(next(fields))
    flat: dict = {"_name": name, "_line": line}
    deleted: list[str] = []
    escape = message.esc
    for f_index, field in enumerate(fields, start=1):
        keys = _LOCATION_KEYS[f_index] if f_index < len(_LOCATION_KEYS) else _location_keys(f_index)
        f_key = keys[0]
        if f_index <= 2 and name == "MSH":
            flat[f_key] = str(field)
            continue

        text = _field_text(field)
        if text is not None:
            if not text:
                continue
            if text == DELETE_VALUE:
                deleted.append(f_key)
                continue
            value = _unescape(message, text) if escape in text else text
            _, component_key, subcomponent_key, list_key = keys
            flat[f_key] = value
            flat[component_key] = value
            flat[subcomponent_key] = value
            flat[list_key] = [{"1": value, "1.1": value}]
            continue

        if field and all(isinstance(part, str) for part in field):
            repetitions = [list(field)]
        else:
            repetitions = field
        flattened = [_flatten_repetition(message, rep, deleted, f_key) for rep in repetitions]
        # An empty repetition carries nothing, even the first one: `PID["3"]` is the first repetition with a value.
        flattened = [rep for rep in flattened if rep]
        if not flattened:
            continue
        for key, value in flattened[0].items():
            if key == "1":
                flat[f_key] = value
            flat[f"{f_key}.{key}"] = value
        flat[f"{f_key}[]"] = flattened
    flat["_deleted"] = list(dict.fromkeys(deleted))
    return flat


def _group_orders(segments: list[dict]) -> list[dict]:
    orders: list[dict] = []
    current: dict | None = None
    pending_orc: dict | None = None
    for seg in segments:
        name = seg["_name"]
        if name == "ORC":
            pending_orc = seg
        elif name in _GROUP_OPENERS:
            current = {"OBR": seg, **({"ORC": pending_orc} if pending_orc else {})}
            current.update({member: [] for member in _GROUP_MEMBERS})
            orders.append(current)
            pending_orc = None
        elif name in _GROUP_MEMBERS and current is not None:
            current[name].append(seg)
    return orders


def message_record(origin: str, start_line: int, text: str, index: int) -> SourceRecord:
    """Parse one message into one record; raise ValueError with a readable reason when it cannot be parsed.

    An ADT^A40 with several PID/MRG pairs is rejected, because one record would
    drop all pairs but the first: message_records maps each pair.
    """
    record = _parse_message(origin, start_line, text, index)
    pairs = len(_merge_pairs(record.data["segments"]))
    if pairs > 1:
        raise MessageError(t("hl7v2.merge_pairs", count=pairs), t("hl7v2.merge_pairs.fix"))
    return record


def _parse_message(origin: str, start_line: int, text: str, index: int) -> SourceRecord:
    if not text.startswith("MSH"):
        raise MessageError(t("problem.v2_no_msh"))
    if len(text) < 9:
        raise MessageError(t("problem.v2_truncated_msh"))
    charset_codec(text)
    version = _msh_field(text, 12).split(text[4])[0] if len(text) > 4 else ""
    if version not in VERSIONS:
        raise MessageError(t("hl7v2.version_unknown", version=version[:12] or '""', known=", ".join(VERSIONS)),
                           t("hl7v2.version_unknown.fix"))
    message = hl7.parse(text)
    segments = []
    for offset, segment in enumerate(message):
        segments.append(flatten_segment(message, segment, start_line + offset))

    data: dict = {"segments": {}, **{name: {"_deleted": []} for name in ALWAYS_PRESENT}}
    for seg in segments:
        if "_name" not in data.get(seg["_name"], {}):
            data[seg["_name"]] = seg
        data["segments"].setdefault(seg["_name"], []).append(seg)
    data["orders"] = _group_orders(segments)

    msh = data["MSH"]
    message_type = msh.get("9.1", "")
    event = msh.get("9.2", "")
    control_id = msh.get("10", "")
    sender = "|".join(part for part in (msh.get("3", ""), msh.get("4", "")) if part)
    data["source"] = {"kind": "hl7v2", "file": origin, "line": start_line, "index": index}
    key = f"{sender}|{control_id}" if control_id else f"{origin}#{index}"
    return SourceRecord(
        kind="hl7v2",
        origin=origin,
        position=t("position.line_message", line=start_line, index=index),
        key=key,
        data=data,
        selector={"message_type": message_type, "trigger_event": event},
    )


def message_records(origin: str, start_line: int, text: str, index: int) -> list[SourceRecord]:
    """Parse one message into its records: one, except an ADT^A40 with several PID/MRG pairs, one per pair.

    Each merge of a multi-pair A40 names its own surviving patient, and the
    engine maps one patient per record.
    """
    record = _parse_message(origin, start_line, text, index)
    pairs = _merge_pairs(record.data["segments"])
    if len(pairs) < 2:
        return [record]
    records = []
    for number, (pid, mrg) in enumerate(pairs, start=1):
        data = dict(record.data, PID=pid, MRG=mrg, merge={"pair": number, "pairs": len(pairs)})
        records.append(SourceRecord(kind=record.kind, origin=origin,
                                    position=t("hl7v2.position.line_message_pair", line=start_line, index=index, pair=number),
                                    key=f"{record.key}#{number}", data=data, selector=record.selector))
    return records


def _merge_pairs(segments: dict) -> list[tuple[dict, dict]]:
    return list(zip(segments.get("PID", []), segments.get("MRG", [])))


def read_files(paths: list[Path]) -> ReadResult:
    result = ReadResult()
    for path in expand_paths(paths, SUFFIXES):
        origin = str(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            result.problems.append(Problem(origin, "file", t("problem.unreadable", reason=error.strerror)))
            continue
        # One character per byte until each message is decoded with its own MSH-18 character set.
        text = raw.decode("latin-1").replace(_BOM.encode("utf-8").decode("latin-1"), "")
        messages = split_messages(text)
        if not messages:
            result.problems.append(Problem(origin, "file", t("problem.v2_empty"), t("problem.v2_empty.fix")))
        for index, (start_line, message_text) in enumerate(messages, start=1):
            try:
                result.records.extend(message_records(origin, start_line, decode_message(message_text, start_line), index))
            except (ValueError, IndexError, KeyError) as error:
                # Only our own messages are shown: a library's may quote the segment text.
                reason = str(error) if isinstance(error, MessageError) else type(error).__name__
                fix = getattr(error, "fix", None) or t("problem.v2_unparseable.fix")
                result.problems.append(
                    Problem(origin, t("position.line_message", line=start_line, index=index), t("problem.v2_unparseable", reason=reason), fix)
                )
    return result
