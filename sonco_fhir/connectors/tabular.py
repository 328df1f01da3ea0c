"""SPICE and HYGEN exports: CSV and JSON files read against the platform's export contract.

The contract is `connectors/<kind>.yaml` at the repository root (beside
`mappings/`). It lists the export files by file name pattern, gives each a
`file_kind`, a format (CSV with its delimiter, or JSON) and the fields
expected, with those that are required. The connector checks every row or
record against it and yields one SourceRecord per valid row or record.
Templates see `row` (the checked values), `source` and `source_system`.

A problem names the file, line or record, column or field, and the fix, but
never the value, which may be personal data. A bad row is set aside and the
other rows of the file still load.
"""

import csv
import fnmatch
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import Settings
from ..errors import ConfigurationError, Problem
from ..i18n import language
from ..mapping.dates import InvalidDate, export_datetime
from .base import ReadResult, SourceRecord, expand_paths

FIELD_TYPES = ("text", "date", "datetime", "list", "object")
FORMATS = ("csv", "json")
CHECKS = ("ins-nir",)
_BOM = "\ufeff"
_INS_NIR = re.compile(r"^[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}$")

# Problem texts, in the two languages of the CLI (`--lang`, SONCO_LANG).
_MESSAGES = {
    "en": {
        "where.file": "file",
        "where.header": "header (line {line})",
        "where.line": "line {line}",
        "where.record": "record {index}",
        "where.column": "line {line}, column {names}",
        "where.columns": "line {line}, columns {names}",
        "where.field": "record {index}, field {names}",
        "where.fields": "record {index}, fields {names}",
        "file.unreadable": "cannot be read: {reason}",
        "file.unknown": "the file name matches no {platform} export file",
        "file.unknown.fix": "name the file after one of the patterns {patterns}, or check the source kind",
        "file.not_utf8": "is not UTF-8 text (first invalid byte on line {line})",
        "file.not_utf8.fix": "export the file as UTF-8 (in a spreadsheet: save as 'CSV UTF-8')",
        "file.empty": "contains no header line",
        "file.empty.fix": "export the file again with its header line",
        "header.missing": "missing required column(s): {names}",
        "header.missing.fix": "add the column(s) to the export; {contract} lists the expected columns",
        "header.delimiter": "the header is separated by '{found}' but the {platform} contract uses '{expected}'",
        "header.delimiter.fix": "export the file with '{expected}' as the delimiter",
        "header.duplicate": "column {names} appears more than once in the header",
        "header.duplicate.fix": "keep one column of each name",
        "row.field_count": "{found} values but the header has {expected} columns",
        "row.field_count.fix": "check the delimiter and the quotes on this line",
        "row.duplicate": "same {names} as line {other}; this row is set aside",
        "row.duplicate.fix": "remove the duplicate row from the export",
        "record.duplicate": "same {names} as record {other}; this record is set aside",
        "json.invalid": "invalid JSON: {reason}",
        "json.invalid.fix": "export the file again; it must be one JSON document",
        "json.root": "the JSON document must be a list of records or an object with a '{records}' list",
        "json.root.fix": "check the file is a {platform} export of the kind '{file_kind}'",
        "json.record": "the record is not a JSON object",
        "json.record.fix": "each element of the list must be an object {...}",
        "value.missing": "required value missing",
        "value.missing.fix": "fill in {names} in {platform}, then export again",
        "value.not_allowed": "value not allowed",
        "value.not_allowed.fix": "use one of: {values}",
        "value.bad_date": "invalid date",
        "value.bad_date.fix": "write dates as {expected}",
        "value.partial_date": "incomplete date",
        "value.partial_date.fix": "give day, month and year ({expected})",
        "value.bad_format": "invalid format",
        "value.bad_format.fix": "expected a value like {example}",
        "value.bad_ins": "not a valid INS-NIR",
        "value.bad_ins.fix": "an INS-NIR has 15 characters and ends with its 2-digit control key; correct it in {platform}",
        "value.not_text": "must be text",
        "value.not_list": "must be a list",
        "value.not_object": "must be an object",
        "value.type.fix": "follow the field types listed in {contract}",
    },
    "fr": {
        "where.file": "fichier",
        "where.header": "en-tête (ligne {line})",
        "where.line": "ligne {line}",
        "where.record": "enregistrement {index}",
        "where.column": "ligne {line}, colonne {names}",
        "where.columns": "ligne {line}, colonnes {names}",
        "where.field": "enregistrement {index}, champ {names}",
        "where.fields": "enregistrement {index}, champs {names}",
        "file.unreadable": "illisible : {reason}",
        "file.unknown": "le nom du fichier ne correspond à aucun fichier d'export {platform}",
        "file.unknown.fix": "nommez le fichier selon l'un des modèles {patterns}, ou vérifiez le type de source",
        "file.not_utf8": "n'est pas un texte UTF-8 (premier octet invalide à la ligne {line})",
        "file.not_utf8.fix": "exportez le fichier en UTF-8 (dans un tableur : enregistrer au format « CSV UTF-8 »)",
        "file.empty": "ne contient pas de ligne d'en-tête",
        "file.empty.fix": "exportez de nouveau le fichier avec sa ligne d'en-tête",
        "header.missing": "colonne(s) obligatoire(s) absente(s) : {names}",
        "header.missing.fix": "ajoutez la ou les colonnes à l'export ; {contract} liste les colonnes attendues",
        "header.delimiter": "l'en-tête est séparé par « {found} » mais le contrat {platform} utilise « {expected} »",
        "header.delimiter.fix": "exportez le fichier avec « {expected} » comme séparateur",
        "header.duplicate": "la colonne {names} apparaît plusieurs fois dans l'en-tête",
        "header.duplicate.fix": "gardez une seule colonne de chaque nom",
        "row.field_count": "{found} valeurs alors que l'en-tête a {expected} colonnes",
        "row.field_count.fix": "vérifiez le séparateur et les guillemets de cette ligne",
        "row.duplicate": "même {names} qu'à la ligne {other} ; cette ligne est mise de côté",
        "row.duplicate.fix": "supprimez la ligne en double de l'export",
        "record.duplicate": "même {names} que l'enregistrement {other} ; cet enregistrement est mis de côté",
        "json.invalid": "JSON invalide : {reason}",
        "json.invalid.fix": "exportez de nouveau le fichier ; il doit contenir un seul document JSON",
        "json.root": "le document JSON doit être une liste d'enregistrements ou un objet avec une liste « {records} »",
        "json.root.fix": "vérifiez qu'il s'agit d'un export {platform} de type « {file_kind} »",
        "json.record": "l'enregistrement n'est pas un objet JSON",
        "json.record.fix": "chaque élément de la liste doit être un objet {...}",
        "value.missing": "valeur obligatoire absente",
        "value.missing.fix": "renseignez {names} dans {platform}, puis exportez de nouveau",
        "value.not_allowed": "valeur non autorisée",
        "value.not_allowed.fix": "utilisez l'une des valeurs : {values}",
        "value.bad_date": "date invalide",
        "value.bad_date.fix": "écrivez les dates au format {expected}",
        "value.partial_date": "date incomplète",
        "value.partial_date.fix": "donnez le jour, le mois et l'année ({expected})",
        "value.bad_format": "format invalide",
        "value.bad_format.fix": "valeur attendue de la forme {example}",
        "value.bad_ins": "INS-NIR invalide",
        "value.bad_ins.fix": "un INS-NIR compte 15 caractères et se termine par sa clé de contrôle à 2 chiffres ; corrigez-le dans {platform}",
        "value.not_text": "doit être un texte",
        "value.not_list": "doit être une liste",
        "value.not_object": "doit être un objet",
        "value.type.fix": "respectez les types de champ listés dans {contract}",
    },
}
_DATE_FORMATS = {"csv": "JJ/MM/AAAA", "json": "AAAA-MM-JJ"}


def _text(key: str, **values) -> str:
    catalogue = _MESSAGES.get(language(), _MESSAGES["fr"])
    return catalogue[key].format(**values)


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


@dataclass
class FileSpec:
    file_kind: str
    pattern: str
    format: str
    key: list[str]
    fields: list[FieldSpec]
    delimiter: str = ";"
    records: str | None = None


@dataclass
class Contract:
    path: Path
    platform: str
    source_system: str
    files: list[FileSpec]

    def file_for(self, path: Path) -> FileSpec | None:
        name = path.name.lower()
        for spec in self.files:
            if fnmatch.fnmatchcase(name, spec.pattern.lower()):
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
    return Contract(path=path, platform=str(content["platform"]), source_system=str(content["source_system"]), files=files)


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
    delimiter = str(entry.get("delimiter", ";"))
    if entry["format"] == "csv" and len(delimiter) != 1:
        raise ConfigurationError(f"{where}: delimiter must be one character")
    return FileSpec(
        file_kind=str(entry["file_kind"]), pattern=str(entry["pattern"]), format=entry["format"],
        key=[str(key) for key in keys], fields=fields, delimiter=delimiter, records=entry.get("records"),
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

    def issues_problem(self, origin: str, issues: list[Issue], line: int | None = None, index: int | None = None) -> None:
        """Add one problem for the row or record, naming every bad column or field."""
        names = ", ".join(dict.fromkeys(issue.path for issue in issues))
        plural = len({issue.path for issue in issues}) > 1
        if line is not None:
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

    def record(self, spec: FileSpec, origin: str, row: dict, position: str, where: dict) -> SourceRecord:
        business_id = "|".join(str(row[name]) for name in spec.key)
        return SourceRecord(
            kind=self.kind,
            origin=origin,
            position=position,
            key=f"{self.kind}|{spec.file_kind}|{business_id}",
            data={
                "row": row,
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
        origin = str(path)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=spec.delimiter)
        header: list[str] | None = None
        seen: dict[str, int] = {}
        previous_end = 0
        for cells in reader:
            line = previous_end + 1
            previous_end = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in cells]
                if not self.check_header(origin, spec, header, line):
                    return
                continue
            if len(cells) != len(header):
                self.problem(origin, _text("where.line", line=line), "row.field_count", "row.field_count.fix",
                             found=len(cells), expected=len(header))
                continue
            row = dict(zip(header, cells))
            issues = check_fields(row, spec.fields, "", _DATE_FORMATS["csv"])
            if issues:
                self.issues_problem(origin, issues, line=line)
                continue
            business_id = "|".join(row[name] for name in spec.key)
            if business_id in seen:
                self.problem(origin, _text("where.line", line=line), "row.duplicate", "row.duplicate.fix",
                             names=", ".join(spec.key), other=seen[business_id])
                continue
            seen[business_id] = line
            self.result.records.append(self.record(spec, origin, row, f"line {line}", {"line": line}))
        if header is None:
            self.problem(origin, _text("where.file"), "file.empty", "file.empty.fix")

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
            document = json.loads(text)
        except json.JSONDecodeError as error:
            self.problem(origin, _text("where.line", line=error.lineno), "json.invalid", "json.invalid.fix", reason=error.msg)
            return
        records = document.get(spec.records) if isinstance(document, dict) and spec.records else document
        if not isinstance(records, list):
            self.problem(origin, _text("where.file"), "json.root", "json.root.fix",
                         records=spec.records or "", file_kind=spec.file_kind)
            return
        seen: dict[str, int] = {}
        for index, record in enumerate(records, start=1):
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
            self.result.records.append(self.record(spec, origin, record, f"record {index}", {"index": index}))


def read_files(kind: str, paths: list[Path], settings: Settings) -> ReadResult:
    """Read SPICE or HYGEN export files, in the order of the contract's file list.

    Files of the first declared kind (the requests) come first, so that
    the identity crosswalk links a request's INS and IPP to the platform
    patient id before the rows that carry only that id are mapped.
    """
    contract = load_contract(kind, settings)
    reader = _Reader(kind, contract)
    suffixes = tuple(sorted({Path(spec.pattern).suffix.lower() for spec in contract.files if Path(spec.pattern).suffix}))
    order = {spec.file_kind: position for position, spec in enumerate(contract.files)}

    known: list[tuple[int, str, Path, FileSpec]] = []
    for path in expand_paths(paths, suffixes):
        spec = contract.file_for(path)
        if spec is None:
            reader.problem(str(path), _text("where.file"), "file.unknown", "file.unknown.fix", patterns=contract.patterns)
            continue
        known.append((order[spec.file_kind], path.name, path, spec))

    for _, _, path, spec in sorted(known, key=lambda entry: entry[:2]):
        text = reader.decode(path)
        if text is None:
            continue
        if spec.format == "csv":
            reader.read_csv(path, spec, text)
        else:
            reader.read_json(path, spec, text)
    return reader.result
