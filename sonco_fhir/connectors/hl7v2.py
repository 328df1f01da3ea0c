"""HL7 v2 files: split into messages, parse with python-hl7, flatten for templates.

Templates address fields with HL7 locations relative to a segment. In
`PID["3.4.2"]` the key is field 3, component 4, subcomponent 2 of the
first repetition. `PID["3[]"]` lists every repetition, each with keys
relative to the field (`"1"`, `"4.2"`). Empty values are left out, so a
template tests presence with `"7" in PID`.
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


class MessageError(ValueError):
    """A message that cannot be parsed, with a reason that quotes no field value."""


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


def _as_list(node) -> list:
    return [node] if isinstance(node, str) else list(node)


def _flatten_repetition(message: hl7.Message, repetition) -> dict[str, str]:
    flat: dict[str, str] = {}
    for c_index, component in enumerate(_as_list(repetition), start=1):
        for s_index, sub in enumerate(_as_list(component), start=1):
            if not isinstance(sub, str) or sub == "":
                continue
            value = message.unescape(sub) if "\\" in sub else sub
            flat.setdefault(str(c_index), value) if s_index == 1 else None
            flat[f"{c_index}.{s_index}"] = value
    return flat


def flatten_segment(message: hl7.Message, segment, line: int) -> dict:
    """Flatten one python-hl7 segment into location keys (see the module docstring)."""
    name = str(segment[0])
    flat: dict = {"_name": name, "_line": line}
    for f_index in range(1, len(segment)):
        field = segment[f_index]
        if name == "MSH" and f_index <= 2:
            flat[str(f_index)] = str(field)
            continue
        if isinstance(field, str):
            repetitions = [field]
        elif field and all(isinstance(part, str) for part in field):
            repetitions = [list(field)] if len(field) > 1 else [field[0]]
        else:
            repetitions = list(field)
        flattened = [_flatten_repetition(message, rep) for rep in repetitions]
        flattened_nonempty = [rep for rep in flattened if rep]
        if not flattened_nonempty:
            continue
        f_key = str(f_index)
        first = flattened[0]
        for key, value in first.items():
            if key == "1":
                flat[f_key] = value
            flat[f"{f_key}.{key}"] = value
        flat[f"{f_key}[]"] = flattened
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
    """Parse one message; raise ValueError with a readable reason when it cannot be parsed."""
    if not text.startswith("MSH"):
        raise MessageError(t("problem.v2_no_msh"))
    if len(text) < 9:
        raise MessageError(t("problem.v2_truncated_msh"))
    message = hl7.parse(text)
    segments = []
    for offset, segment in enumerate(message):
        segments.append(flatten_segment(message, segment, start_line + offset))

    data: dict = {"segments": {}, **{name: {} for name in ALWAYS_PRESENT}}
    for seg in segments:
        if not data.get(seg["_name"]):
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


def read_files(paths: list[Path]) -> ReadResult:
    result = ReadResult()
    for path in expand_paths(paths, SUFFIXES):
        origin = str(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            result.problems.append(Problem(origin, "file", t("problem.unreadable", reason=error.strerror)))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # MSH-18 8859/1 files: Latin-1 decodes every byte.
            text = raw.decode("latin-1")
        messages = split_messages(text)
        if not messages:
            result.problems.append(Problem(origin, "file", t("problem.v2_empty"), t("problem.v2_empty.fix")))
        for index, (start_line, message_text) in enumerate(messages, start=1):
            try:
                result.records.append(message_record(origin, start_line, message_text, index))
            except (ValueError, IndexError, KeyError) as error:
                # Only our own messages are shown: a library's may quote the segment text.
                reason = str(error) if isinstance(error, MessageError) else type(error).__name__
                result.problems.append(
                    Problem(origin, t("position.line_message", line=start_line, index=index), t("problem.v2_unparseable", reason=reason),
                            t("problem.v2_unparseable.fix"))
                )
    return result
