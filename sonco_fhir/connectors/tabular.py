"""SPICE and HYGEN exports: CSV, XLSX and JSON files read against the platform's export contract.

The contract is `connectors/<kind>.yaml` at the repository root (beside
`mappings/`). It lists the export files by file name pattern, gives each a
`file_kind`, a format (CSV with its delimiter, or JSON) and the fields
expected, with those that are required. A CSV file may also come as an
XLSX workbook of the same name with the suffix `.xlsx`: same columns, read
from the sheet named after the file kind, or from the only sheet. The
connector checks every row or record against the contract and yields one
SourceRecord per valid row or record, or per group of rows when the file
declares `group_by`. Templates see `row` (the checked values), `rows` (the
rows of a group), `source` and `source_system`. The records that `read_api`
gets from a platform's REST API (platform_api.py) go through the same checks.

A problem names the file, line (sheet and row) or record, column or field,
and the fix, but never the value, which may be personal data. A bad row is
set aside and the other rows of the file still load.
"""

import csv
import fnmatch
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zipfile import BadZipFile

import openpyxl
import yaml

from ..config import Settings
from ..errors import ConfigurationError, Problem
from ..i18n import t
from ..mapping.dates import InvalidDate, export_datetime
from .base import ReadResult, SourceRecord, expand_paths

FIELD_TYPES = ("text", "number", "date", "datetime", "list", "object")
FORMATS = ("csv", "json")
CHECKS = ("ins-nir",)
_BOM = "\ufeff"
_INS_NIR = re.compile(r"^[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}$")

_DATE_FORMATS = {"csv": "JJ/MM/AAAA", "json": "AAAA-MM-JJ"}


def _text(key: str, **values) -> str:
    """Return a reading problem's text from the `platforms.*` keys of the locale catalogues."""
    return t(f"platforms.{key}", **values)


# --- the contract ---


@dataclass
class FieldSpec:
    """One column of a CSV file, or one member of a JSON record or nested object."""

    name: str
    type: str = "text"
    required: bool = False
    values: list[str] = field(default_factory=list)
    pattern: re.Pattern | None = None
    example: str | None = None
    check: str | None = None
    separator: str | None = None
    fields: list["FieldSpec"] = field(default_factory=list)
    # Sibling field name -> the values of it that make this field required.
    required_when: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class FileSpec:
    file_kind: str
    pattern: str
    format: str
    key: list[str]
    fields: list[FieldSpec]
    delimiter: str = ";"
    records: str | None = None
    # Columns whose rows make one record together (all the findings of one request), in file order.
    group_by: list[str] = field(default_factory=list)


@dataclass
class Contract:
    path: Path
    platform: str
    source_system: str
    files: list[FileSpec]
    api: dict | None = None  # the raw `api` section, checked by platform_api.load_api_config

    def file_for(self, path: Path) -> FileSpec | None:
        """Return the file spec whose pattern matches the name; a CSV pattern also matches the `.xlsx` name."""
        name = path.name.lower()
        for spec in self.files:
            pattern = spec.pattern.lower()
            if fnmatch.fnmatchcase(name, pattern):
                return spec
            if spec.format == "csv" and pattern.endswith(".csv") and fnmatch.fnmatchcase(name, pattern[:-4] + ".xlsx"):
                return spec
        return None

    @property
    def patterns(self) -> str:
        return ", ".join(spec.pattern for spec in self.files)


def load_contract(kind: str, settings: Settings) -> Contract:
    """Read and check `connectors/<kind>.yaml`; raise ConfigurationError naming the mistake."""
    path = settings.mappings_dir.parent / "connectors" / f"{kind}.yaml"
    if not path.is_file():
        raise ConfigurationError(f"connector definition not found: {path}")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path}: invalid YAML: {error}") from None
    if not isinstance(content, dict) or not isinstance(content.get("files"), list) or not content["files"]:
        raise ConfigurationError(f"{path}: needs 'platform', 'source_system' and a non-empty 'files' list")
    for key in ("platform", "source_system"):
        if not content.get(key):
            raise ConfigurationError(f"{path}: missing key '{key}'")
    files = [_file_spec(path, index, entry) for index, entry in enumerate(content["files"])]
    return Contract(path=path, platform=str(content["platform"]), source_system=str(content["source_system"]), files=files,
                    api=content.get("api"))


def _file_spec(path: Path, index: int, entry) -> FileSpec:
    where = f"{path}: files[{index}]"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be a mapping")
    for key in ("file_kind", "pattern", "format", "key", "fields"):
        if key not in entry:
            raise ConfigurationError(f"{where}: missing key '{key}'")
    if entry["format"] not in FORMATS:
        raise ConfigurationError(f"{where}: format must be one of {', '.join(FORMATS)}")
    fields = [_field_spec(f"{where}.fields", item) for item in entry["fields"]]
    keys = entry["key"] if isinstance(entry["key"], list) else [entry["key"]]
    by_name = {spec.name: spec for spec in fields}
    for key in keys:
        if key not in by_name or not by_name[key].required or by_name[key].type != "text":
            raise ConfigurationError(f"{where}: key field '{key}' must be a declared, required text field")
    group_by = entry.get("group_by") or []
    group_by = group_by if isinstance(group_by, list) else [group_by]
    for name in group_by:
        if name not in by_name or not by_name[name].required:
            raise ConfigurationError(f"{where}: group_by field '{name}' must be a declared, required field")
    delimiter = str(entry.get("delimiter", ";"))
    if entry["format"] == "csv" and len(delimiter) != 1:
        raise ConfigurationError(f"{where}: delimiter must be one character")
    return FileSpec(
        file_kind=str(entry["file_kind"]), pattern=str(entry["pattern"]), format=entry["format"],
        key=[str(key) for key in keys], fields=fields, delimiter=delimiter, records=entry.get("records"),
        group_by=[str(name) for name in group_by],
    )


def _field_spec(where: str, entry) -> FieldSpec:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise ConfigurationError(f"{where}: each field needs a 'name'")
    where = f"{where}.{entry['name']}"
    field_type = entry.get("type", "text")
    if field_type not in FIELD_TYPES:
        raise ConfigurationError(f"{where}: type must be one of {', '.join(FIELD_TYPES)}")
    if entry.get("check") and entry["check"] not in CHECKS:
        raise ConfigurationError(f"{where}: check must be one of {', '.join(CHECKS)}")
    try:
        pattern = re.compile(entry["pattern"]) if entry.get("pattern") else None
    except re.error as error:
        raise ConfigurationError(f"{where}: invalid pattern: {error}") from None
    required_when = entry.get("required_when") or {}
    if not isinstance(required_when, dict):
        raise ConfigurationError(f"{where}: required_when must map a field name to a list of values")
    return FieldSpec(
        name=str(entry["name"]).lower(),
        type=field_type,
        required=bool(entry.get("required", False)),
        values=[str(value) for value in entry.get("values") or []],
        pattern=pattern,
        example=entry.get("example"),
        check=entry.get("check"),
        separator=entry.get("separator"),
        fields=[_field_spec(where, item) for item in entry.get("fields") or []],
        required_when={
            str(name).lower(): [str(value) for value in (values if isinstance(values, list) else [values])]
            for name, values in required_when.items()
        },
    )


# --- checking values ---


@dataclass
class Issue:
    """One bad value: the column or field path, and the message and fix keys with their values."""

    path: str
    message: str
    fix: str
    values: dict = field(default_factory=dict)


def _fold(text: str) -> str:
    """Lower case without accents, so that 'Congelé' matches the contract value 'congele'."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).lower().strip()


def _valid_ins_nir(value: str) -> bool:
    if not _INS_NIR.match(value):
        return False
    # Corsica: the department 2A or 2B counts as 19 or 18 in the control key.
    digits = value[:13].replace("2A", "19", 1) if value[5:7] == "2A" else value[:13]
    digits = digits.replace("2B", "18", 1) if value[5:7] == "2B" else digits
    return 97 - int(digits) % 97 == int(value[13:])


def _check_text(spec: FieldSpec, value: str, path: str, date_format: str) -> tuple[str, list[Issue]]:
    """Return the value in the contract's spelling, with the issues found."""
    if spec.values:
        folded = {_fold(allowed): allowed for allowed in spec.values}
        if _fold(value) not in folded:
            return value, [Issue(path, "value.not_allowed", "value.not_allowed.fix", {"values": ", ".join(spec.values)})]
        value = folded[_fold(value)]
    if spec.type == "number":
        try:
            Decimal(value.replace(",", "."))
        except InvalidOperation:
            return value, [Issue(path, "value.not_number", "value.not_number.fix", {"example": spec.example or "0,25"})]
    if spec.type in ("date", "datetime"):
        try:
            parsed = export_datetime(value)
        except InvalidDate:
            return value, [Issue(path, "value.bad_date", "value.bad_date.fix", {"expected": date_format})]
        if len(parsed) < len("AAAA-MM-JJ"):
            return value, [Issue(path, "value.partial_date", "value.partial_date.fix", {"expected": date_format})]
    if spec.check == "ins-nir" and not _valid_ins_nir(value):
        return value, [Issue(path, "value.bad_ins", "value.bad_ins.fix")]
    if spec.pattern and not spec.pattern.search(value):
        return value, [Issue(path, "value.bad_format", "value.bad_format.fix", {"example": spec.example or spec.pattern.pattern})]
    return value, []


def _cell_text(value) -> str:
    """Convert a worksheet cell to the text a CSV export would hold: dates in ISO 8601, numbers as written."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds") if value.time() != time(0) else value.date().isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_text(value) -> str | None:
    """JSON text, or a JSON number written as text; None for anything else."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def check_fields(values: dict, specs: list[FieldSpec], prefix: str, date_format: str) -> list[Issue]:
    """Check `values` against `specs` in place: every declared field ends up present.

    An absent or empty field becomes None (an empty list for a list), so
    templates may write `row.ipp` for an optional column. Allowed values
    take the contract's spelling, and CSV lists are split on their separator.
    """
    issues: list[Issue] = []
    for spec in specs:
        path = f"{prefix}{spec.name}"
        raw = values.get(spec.name)
        if isinstance(raw, str):
            raw = raw.strip()
        if raw in (None, "", [], {}):
            values[spec.name] = [] if spec.type == "list" else None
            if spec.required:
                issues.append(Issue(path, "value.missing", "value.missing.fix"))
            continue

        if spec.type == "object":
            if not isinstance(raw, dict):
                issues.append(Issue(path, "value.not_object", "value.type.fix"))
                continue
            issues.extend(check_fields(raw, spec.fields, f"{path}.", date_format))
        elif spec.type == "list":
            items = raw.split(spec.separator) if isinstance(raw, str) and spec.separator else raw
            if not isinstance(items, list):
                issues.append(Issue(path, "value.not_list", "value.type.fix"))
                continue
            checked = []
            for index, item in enumerate(items):
                item_path = f"{path}[{index}]"
                if spec.fields:
                    if not isinstance(item, dict):
                        issues.append(Issue(item_path, "value.not_object", "value.type.fix"))
                        continue
                    issues.extend(check_fields(item, spec.fields, f"{item_path}.", date_format))
                    checked.append(item)
                    continue
                text = _as_text(item)
                if text is None:
                    issues.append(Issue(item_path, "value.not_text", "value.type.fix"))
                elif text:
                    text, found = _check_text(spec, text, item_path, date_format)
                    issues.extend(found)
                    checked.append(text)
            values[spec.name] = checked
        else:
            text = _as_text(raw)
            if text is None:
                issues.append(Issue(path, "value.not_text", "value.type.fix"))
                continue
            values[spec.name], found = _check_text(spec, text, path, date_format)
            issues.extend(found)
    issues.extend(_conditional_issues(values, specs, prefix))
    return issues


def _conditional_issues(values: dict, specs: list[FieldSpec], prefix: str) -> list[Issue]:
    """Check `required_when`: a field left empty while a sibling field has one of the listed values."""
    issues = []
    for spec in specs:
        if values.get(spec.name) not in (None, [], ""):
            continue
        for name, triggers in spec.required_when.items():
            if values.get(name) in triggers:
                condition = f"{prefix}{name} = {values[name]}"
                issues.append(Issue(f"{prefix}{spec.name}", "value.required_when", "value.missing.fix", {"condition": condition}))
                break
    return issues


# --- reading files ---


class _Reader:
    """Reads the files of one source kind into a ReadResult."""

    def __init__(self, kind: str, contract: Contract):
        self.kind = kind
        self.contract = contract
        self.result = ReadResult()

    def problem(self, origin: str, location: str, message: str, fix: str = "", **values) -> None:
        values.setdefault("platform", self.contract.platform)
        values.setdefault("contract", f"connectors/{self.kind}.yaml")
        fix_text = _text(fix, **values) if fix else ""
        self.result.problems.append(Problem(origin, location, _text(message, **values), fix_text))

    def issues_problem(self, origin: str, issues: list[Issue], line: int | None = None, index: int | None = None,
                       sheet: str | None = None) -> None:
        """Add one problem for the row or record, naming every bad column or field."""
        names = ", ".join(dict.fromkeys(issue.path for issue in issues))
        plural = len({issue.path for issue in issues}) > 1
        if sheet is not None:
            location = _text("where.sheet_cells" if plural else "where.sheet_cell", sheet=sheet, line=line, names=names)
        elif line is not None:
            location = _text("where.columns" if plural else "where.column", line=line, names=names)
        else:
            location = _text("where.fields" if plural else "where.field", index=index, names=names)
        common = {"platform": self.contract.platform, "contract": f"connectors/{self.kind}.yaml"}
        messages, fixes = [], []
        for issue in issues:
            values = {**common, "names": issue.path, **issue.values}
            messages.append(f"{issue.path}: {_text(issue.message, **values)}" if plural else _text(issue.message, **values))
            fixes.append(_text(issue.fix, **values))
        self.result.problems.append(Problem(origin, location, "; ".join(messages), "; ".join(dict.fromkeys(fixes))))

    def record(self, spec: FileSpec, origin: str, row: dict, position: str, where: dict,
               rows: list[dict] | None = None) -> SourceRecord:
        """Build the record of one row, or of a group of rows (`rows`, with `row` the first of them)."""
        key_fields = spec.group_by if rows is not None else spec.key
        business_id = "|".join(str(row[name]) for name in key_fields)
        group = {"rows": rows} if rows is not None else {}
        return SourceRecord(
            kind=self.kind,
            origin=origin,
            position=position,
            key=f"{self.kind}|{spec.file_kind}|{business_id}",
            data={
                "row": row,
                **group,
                "source": {"kind": self.kind, "file_kind": spec.file_kind, "file": origin, **where},
                "source_system": self.contract.source_system,
            },
            selector={"file_kind": spec.file_kind},
        )

    def decode(self, path: Path) -> str | None:
        origin = str(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            self.problem(origin, _text("where.file"), "file.unreadable", reason=error.strerror)
            return None
        try:
            return raw.decode("utf-8").removeprefix(_BOM)
        except UnicodeDecodeError as error:
            line = raw[: error.start].count(b"\n") + 1
            self.problem(origin, _text("where.line", line=line), "file.not_utf8", "file.not_utf8.fix", line=line)
            return None

    def read_csv(self, path: Path, spec: FileSpec, text: str) -> None:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.delimiter)

        def lines():
            previous_end = 0
            for cells in reader:
                line = previous_end + 1
                previous_end = reader.line_num
                yield line, cells

        self.read_rows(str(path), spec, lines(), sheet=None)

    def read_xlsx(self, path: Path, spec: FileSpec) -> None:
        """Read the sheet named after the file kind, or the only sheet, in read-only mode."""
        origin = str(path)
        try:
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except (OSError, BadZipFile, KeyError, ValueError) as error:
            self.problem(origin, _text("where.file"), "file.unreadable", reason=type(error).__name__)
            return
        try:
            names = workbook.sheetnames
            if spec.file_kind in names:
                sheet_name = spec.file_kind
            elif len(names) == 1:
                sheet_name = names[0]
            else:
                self.problem(origin, _text("where.file"), "xlsx.sheet_missing", "xlsx.sheet_missing.fix", sheet=spec.file_kind)
                return
            rows = workbook[sheet_name].iter_rows(values_only=True)
            cells = ((line, [_cell_text(value) for value in row]) for line, row in enumerate(rows, start=1))
            self.read_rows(origin, spec, cells, sheet=sheet_name)
        finally:
            workbook.close()

    def read_rows(self, origin: str, spec: FileSpec, lines, sheet: str | None) -> None:
        """Check the header and each row of a CSV file or worksheet; `lines` yields (line number, cells)."""
        header: list[str] | None = None
        seen: dict[str, int] = {}
        groups: dict[str, tuple[int, list[dict]]] = {}
        for line, cells in lines:
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in cells]
                if sheet is not None:
                    # Worksheets end with empty cells where a row is shorter than the widest one.
                    while header and not header[-1]:
                        header.pop()
                if not self.check_header(origin, spec, header, line):
                    return
                continue
            if sheet is not None:
                # A worksheet row has as many cells as the widest row: pad it, and drop empty cells past the header.
                cells = cells + [""] * (len(header) - len(cells))
                while len(cells) > len(header) and not cells[-1].strip():
                    cells.pop()
            if len(cells) != len(header):
                self.problem(origin, self.where_line(line, sheet), "row.field_count", "row.field_count.fix",
                             found=len(cells), expected=len(header))
                continue
            row = dict(zip(header, cells))
            issues = check_fields(row, spec.fields, "", _DATE_FORMATS["csv"])
            if issues:
                self.issues_problem(origin, issues, line=line, sheet=sheet)
                continue
            business_id = "|".join(row[name] for name in spec.key)
            if business_id in seen:
                self.problem(origin, self.where_line(line, sheet), "row.duplicate", "row.duplicate.fix",
                             names=", ".join(spec.key), other=seen[business_id])
                continue
            seen[business_id] = line
            if spec.group_by:
                group_id = "|".join(row[name] for name in spec.group_by)
                groups.setdefault(group_id, (line, []))[1].append(row)
                continue
            self.result.records.append(self.record(spec, origin, row, *self.place(line, sheet)))
        # NOTE: a bad row leaves its group with the other rows; an implication pointing to it then fails to load.
        for first_line, rows in groups.values():
            self.result.records.append(self.record(spec, origin, rows[0], *self.place(first_line, sheet), rows=rows))
        if header is None:
            self.problem(origin, _text("where.file"), "file.empty", "file.empty.fix")

    @staticmethod
    def place(line: int, sheet: str | None) -> tuple[str, dict]:
        """Return the record's position text and its `source` members, for a CSV line or a worksheet row."""
        if sheet is None:
            return f"line {line}", {"line": line}
        return f"sheet {sheet}, row {line}", {"sheet": sheet, "line": line}

    @staticmethod
    def where_line(line: int, sheet: str | None) -> str:
        return _text("where.line", line=line) if sheet is None else _text("where.sheet_row", sheet=sheet, line=line)

    def check_header(self, origin: str, spec: FileSpec, header: list[str], line: int) -> bool:
        where = _text("where.header", line=line)
        duplicates = sorted({name for name in header if name and header.count(name) > 1})
        if duplicates:
            self.problem(origin, where, "header.duplicate", "header.duplicate.fix", names=", ".join(duplicates))
            return False
        missing = [field_spec.name for field_spec in spec.fields if field_spec.required and field_spec.name not in header]
        if not missing:
            return True
        found = next((mark for mark in (";", ",", "\t", "|") if mark != spec.delimiter and len(header) == 1 and mark in header[0]), None)
        if found:
            shown = "\\t" if found == "\t" else found
            self.problem(origin, where, "header.delimiter", "header.delimiter.fix", found=shown, expected=spec.delimiter)
        else:
            self.problem(origin, where, "header.missing", "header.missing.fix", names=", ".join(missing))
        return False

    def read_json(self, path: Path, spec: FileSpec, text: str) -> None:
        origin = str(path)
        try:
            # Decimals stay text, so an allele frequency keeps the digits the lab sent.
            document = json.loads(text, parse_float=str)
        except json.JSONDecodeError as error:
            self.problem(origin, _text("where.line", line=error.lineno), "json.invalid", "json.invalid.fix", reason=error.msg)
            return
        records = document.get(spec.records) if isinstance(document, dict) and spec.records else document
        if not isinstance(records, list):
            self.problem(origin, _text("where.file"), "json.root", "json.root.fix",
                         records=spec.records or "", file_kind=spec.file_kind)
            return
        self.read_objects(origin, spec, records)

    def read_objects(self, origin: str, spec: FileSpec, records: list, first_index: int = 1) -> list[dict]:
        """Check JSON records (a file's or an API page's); return those that passed, grouped ones included."""
        seen: dict[str, int] = {}
        groups: dict[str, tuple[int, list[dict]]] = {}
        accepted = []
        for index, record in enumerate(records, start=first_index):
            if not isinstance(record, dict):
                self.problem(origin, _text("where.record", index=index), "json.record", "json.record.fix")
                continue
            issues = check_fields(record, spec.fields, "", _DATE_FORMATS["json"])
            if issues:
                self.issues_problem(origin, issues, index=index)
                continue
            business_id = "|".join(record[name] for name in spec.key)
            if business_id in seen:
                self.problem(origin, _text("where.record", index=index), "record.duplicate", "row.duplicate.fix",
                             names=", ".join(spec.key), other=seen[business_id])
                continue
            seen[business_id] = index
            accepted.append(record)
            if spec.group_by:
                group_id = "|".join(record[name] for name in spec.group_by)
                groups.setdefault(group_id, (index, []))[1].append(record)
                continue
            self.result.records.append(self.record(spec, origin, record, f"record {index}", {"index": index}))
        for first, rows in groups.values():
            self.result.records.append(self.record(spec, origin, rows[0], f"record {first}", {"index": first}, rows=rows))
        return accepted


def read_files(kind: str, paths: list[Path], settings: Settings) -> ReadResult:
    """Read SPICE or HYGEN export files, in the order of the contract's file list.

    Files of the first declared kind (the requests) come first, so that
    the identity crosswalk links a request's INS and IPP to the platform
    patient id before the rows that carry only that id are mapped.
    """
    contract = load_contract(kind, settings)
    reader = _Reader(kind, contract)
    suffixes = {Path(spec.pattern).suffix.lower() for spec in contract.files if Path(spec.pattern).suffix}
    if any(spec.format == "csv" for spec in contract.files):
        suffixes.add(".xlsx")
    suffixes = tuple(sorted(suffixes))
    order = {spec.file_kind: position for position, spec in enumerate(contract.files)}

    known: list[tuple[int, str, Path, FileSpec]] = []
    for path in expand_paths(paths, suffixes):
        spec = contract.file_for(path)
        if spec is None:
            reader.problem(str(path), _text("where.file"), "file.unknown", "file.unknown.fix", patterns=contract.patterns)
            continue
        known.append((order[spec.file_kind], path.name, path, spec))

    for _, _, path, spec in sorted(known, key=lambda entry: entry[:2]):
        if path.suffix.lower() == ".xlsx":
            reader.read_xlsx(path, spec)
            continue
        text = reader.decode(path)
        if text is None:
            continue
        if spec.format == "csv":
            reader.read_csv(path, spec, text)
        else:
            reader.read_json(path, spec, text)
    return reader.result


def read_api(kind: str, settings: Settings, client, checkpoint: dict[str, str]) -> tuple[ReadResult, dict[str, str]]:
    """Read the records changed since `checkpoint` from the platform API, endpoint by endpoint in contract order.

    `client` is a platform_api.PlatformClient. Returns the records with the
    problems found, and the new checkpoint: per file kind, the latest
    modification date among the records read (the old one when none came).
    """
    contract = load_contract(kind, settings)
    config = client.config
    reader = _Reader(kind, contract)
    latest = dict(checkpoint)
    for spec in contract.files:
        path = config.endpoints.get(spec.file_kind)
        if not path:
            continue
        index = 1
        for url, records in client.pages(path, checkpoint.get(spec.file_kind)):
            for record in reader.read_objects(url, spec, records, first_index=index):
                latest[spec.file_kind] = _later(latest.get(spec.file_kind), record.get(config.modified_member))
            index += len(records)
    return reader.result, latest


def _later(current: str | None, candidate) -> str | None:
    """Return the later of two export date-times, compared as instants, in the text that was sent."""
    if not isinstance(candidate, str) or not candidate:
        return current
    if not current:
        return candidate
    try:
        return candidate if datetime.fromisoformat(export_datetime(candidate)) > datetime.fromisoformat(export_datetime(current)) else current
    except (InvalidDate, ValueError, TypeError):
        return current
