"""FHIR R4 JSON files from a hospital EHR: single resources, Bundles of any type, NDJSON.

Every resource other than a Bundle or Parameters becomes one source record
when `connectors/fhir.yaml` lists its type. References are resolved across
every file of the run, so a Condition finds its Patient in another file and
templates can point at the SONCO id of any referenced resource. The record
data is documented in `connectors/fhir.yaml`.
"""

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..config import load_settings
from ..i18n import t
from ..errors import ConfigurationError, Problem
from ..i18n import language
from ..privacy.pseudonym import classify_identifier
from .base import ReadResult, SourceRecord, expand_paths

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".ndjson")
# Identifier type codes (HL7 v2 table 0203 and its FR Core extension) that the engine classifies,
# most specific first: the first one present is passed when an identifier has several type codings.
KNOWN_TYPE_CODES = ("INS-NIR", "INS-NIR-TEST", "INS-NIR-DEMO", "INS-NIA", "PI", "MR")
# NH is the insurance (billing) NIR. It shares the INS-NIR OID, but for a child or a
# dependant it is the insured adult's number, so it must never link two persons.
EXCLUDED_TYPE_CODES = ("NH",)
# Input elements that the mappings drop, so their R4 errors do not set a record aside.
DROPPED_ELEMENTS = ("text", "contained", "extension", "modifierExtension")
MAX_REPORTED_ERRORS = 3

# Problem texts, in the two languages of the CLI (`--lang`, SONCO_LANG).
_MESSAGES = {
    "en": {
        "file.unreadable": "cannot be read: {reason}",
        "file.not_utf8": "is not UTF-8 text",
        "file.not_utf8.fix": "FHIR JSON is always UTF-8: export the file again as UTF-8",
        "json.invalid": "invalid JSON: {reason}",
        "json.invalid.fix": "correct the JSON at this place (a missing comma, quote or bracket is the usual cause); the other files are read",
        "json.top_level": "the top level is a JSON {kind}, not a FHIR resource",
        "json.top_level.fix": "write one resource or one Bundle per .json file, or one resource per line in an .ndjson file",
        "json.line": "is a JSON {kind}, not a FHIR resource",
        "json.line.fix": "write one FHIR resource (a JSON object) per line",
        "resource.not_object": "is not a JSON object",
        "resource.not_object.fix": "a resource must be a JSON object with a resourceType",
        "entry.not_object.fix": "each Bundle entry must be a JSON object",
        "resource.no_type": "resource without resourceType",
        "resource.no_type.fix": 'add "resourceType" (for example "Observation") to this resource; the other resources of the file are read',
        "resource.invalid": "{type} is not valid FHIR R4: {errors}",
        "resource.invalid.more": " and {count} more",
        "resource.invalid.fix": "correct these elements at the source; DSTU2 and STU3 exports must be converted to R4 (4.0.1) first",
        "resource.no_patient": "{type} refers to no patient: it has no {elements} that names a Patient, "
                               "and its Bundle does not name exactly one patient",
        "resource.no_patient.or": " or ",
        "resource.no_patient.fix": "give the resource a subject that refers to its Patient, or send it in the Bundle of its patient",
        "r4.unknown_type": "{type} is not an R4 resource type",
        "r4.missing": "required element missing",
        "r4.extra_forbidden": "not an R4 element",
        "r4.string_type": "must be a string",
        "r4.list_type": "must be a list",
        "r4.dict_type": "must be an object",
        "r4.bool_type": "must be true or false",
        "r4.int_type": "must be an integer",
        "r4.decimal_type": "must be a number",
    },
    "fr": {
        "file.unreadable": "illisible : {reason}",
        "file.not_utf8": "n'est pas du texte UTF-8",
        "file.not_utf8.fix": "le JSON FHIR est toujours en UTF-8 : exportez de nouveau le fichier en UTF-8",
        "json.invalid": "JSON invalide : {reason}",
        "json.invalid.fix": "corrigez le JSON à cet endroit (le plus souvent une virgule, un guillemet ou un crochet manquant) ; "
                            "les autres fichiers sont lus",
        "json.top_level": "le niveau supérieur est un {kind} JSON, pas une ressource FHIR",
        "json.top_level.fix": "écrivez une ressource ou un Bundle par fichier .json, ou une ressource par ligne dans un fichier .ndjson",
        "json.line": "est un {kind} JSON, pas une ressource FHIR",
        "json.line.fix": "écrivez une ressource FHIR (un objet JSON) par ligne",
        "resource.not_object": "n'est pas un objet JSON",
        "resource.not_object.fix": "une ressource doit être un objet JSON avec un resourceType",
        "entry.not_object.fix": "chaque entrée de Bundle doit être un objet JSON",
        "resource.no_type": "ressource sans resourceType",
        "resource.no_type.fix": 'ajoutez "resourceType" (par exemple "Observation") à cette ressource ; les autres ressources du fichier sont lues',
        "resource.invalid": "{type} n'est pas du FHIR R4 valide : {errors}",
        "resource.invalid.more": " et {count} autre(s)",
        "resource.invalid.fix": "corrigez ces éléments à la source ; les exports DSTU2 et STU3 doivent d'abord être convertis en R4 (4.0.1)",
        "resource.no_patient": "{type} ne désigne aucun patient : aucun élément {elements} ne renvoie à un Patient, "
                               "et son Bundle ne désigne pas un patient unique",
        "resource.no_patient.or": " ou ",
        "resource.no_patient.fix": "donnez à la ressource un subject qui renvoie à son Patient, ou envoyez-la dans le Bundle de son patient",
        "r4.unknown_type": "{type} n'est pas un type de ressource R4",
        "r4.missing": "élément obligatoire absent",
        "r4.extra_forbidden": "pas un élément R4",
        "r4.string_type": "doit être une chaîne",
        "r4.list_type": "doit être une liste",
        "r4.dict_type": "doit être un objet",
        "r4.bool_type": "doit être true ou false",
        "r4.int_type": "doit être un entier",
        "r4.decimal_type": "doit être un nombre",
    },
}
# pydantic error types that share one text.
_ERROR_TYPE_ALIASES = {"model_field_validation.missing": "missing", "model_type": "dict_type"}
# JSON names of the Python types json.loads returns.
_JSON_KINDS = {"list": "array", "str": "string", "int": "number", "float": "number", "bool": "boolean", "NoneType": "null"}


def _text(key: str, **values) -> str:
    catalogue = _MESSAGES.get(language(), _MESSAGES["fr"])
    return catalogue[key].format(**values)


_LITERAL = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_CONDITIONAL = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\?identifier=(?:(?P<system>[^|&]*)\|)?(?P<value>[^&]+)$")


def reference_lookup_key(reference: dict) -> str | None:
    """Return the key of a Reference in a record's `references` table; the template functions use it too.

    A literal reference is its `reference` text; a logical reference (identifier
    only) is `identifier:<system>|<value>`.
    """
    if not isinstance(reference, dict):
        return None
    if isinstance(reference.get("reference"), str):
        return reference["reference"]
    identifier = reference.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        return f"identifier:{identifier.get('system', '')}|{identifier['value']}"
    return None


def namespaced_key(system: str | None, key: str) -> str:
    """Return the key of a source resource, prefixed with its declared source system when there is one."""
    return f"{system}|{key}" if system else key


@dataclass(frozen=True)
class ConnectorDefinition:
    resource_types: tuple[str, ...]
    patient_elements: tuple[str, ...]
    suffixes: tuple[str, ...] = SUFFIXES


def definition_file() -> Path:
    """`connectors/fhir.yaml` beside the mappings folder, as for the SPICE and HYGEN contracts."""
    return load_settings().mappings_dir.parent / "connectors" / "fhir.yaml"


def load_definition(path: Path | None = None) -> ConnectorDefinition:
    path = path or definition_file()
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(f"{path}: cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigurationError(f"{path}: invalid YAML: {error}") from None
    files = (content or {}).get("files") or {}
    types = files.get("resource_types")
    elements = files.get("patient_elements")
    if not isinstance(types, list) or not types or not isinstance(elements, list) or not elements:
        raise ConfigurationError(f"{path}: files.resource_types and files.patient_elements must be non-empty lists")
    if content.get("rest"):
        raise ConfigurationError(
            f"{path}: 'rest' is no longer read; declare each hospital FHIR server in connectors/fhir-sources/NAME.yaml"
        )
    suffixes = tuple(str(suffix).lower() for suffix in files.get("suffixes") or SUFFIXES)
    return ConnectorDefinition(tuple(str(t) for t in types), tuple(str(e) for e in elements), suffixes)


# --- resources found in the input files ---


@dataclass(eq=False)
class _BundleScope:
    """One Bundle: its entries by fullUrl, so `urn:uuid:` references resolve inside it first."""

    parent: "_BundleScope | None"
    by_full_url: dict = field(default_factory=dict)
    members: list = field(default_factory=list)


@dataclass(eq=False)
class _Found:
    resource: dict
    resource_type: str
    origin: str
    position: str
    source: dict
    full_url: str | None
    bundle: _BundleScope | None
    authority: str | None
    recorded: str | None
    key: str = ""
    patient: "_PatientLink | None" = None


@dataclass
class _PatientLink:
    """The patient of a record: the identifiers the engine pseudonymises, and what the guard looks for."""

    identity: tuple
    identifiers: list[dict]
    names: list[str] = field(default_factory=list)
    birth_dates: list[str] = field(default_factory=list)
    found: _Found | None = None


@dataclass
class _Target:
    resource_type: str | None
    key: str | None
    found: _Found | None = None
    contained: dict | None = None


def _meta_source(resource: dict) -> str | None:
    """meta.source without its fragment: HAPI writes `#<request id>` there, which names no system."""
    meta = resource.get("meta")
    source = meta.get("source") if isinstance(meta, dict) else None
    if not isinstance(source, str):
        return None
    return source.split("#", 1)[0].rstrip("/") or None


def _base_of(full_url: str | None, resource_type: str) -> str | None:
    if not full_url or not full_url.startswith(("http://", "https://")):
        return None
    marker = f"/{resource_type}/"
    return full_url.split(marker, 1)[0] if marker in full_url else None


def _source_key(resource: dict, resource_type: str, full_url: str | None, origin: str, position: str) -> str:
    if isinstance(resource.get("id"), str) and resource["id"]:
        return f"{resource_type}/{resource['id']}"
    if full_url:
        match = _LITERAL.search(full_url)
        if match and full_url.startswith(("http://", "https://")) and match["type"] == resource_type:
            return f"{resource_type}/{match['id']}"
        return full_url
    # NOTE: without an id or a fullUrl the key is the place in the file, so sending the
    # same resource again in another file creates a second SONCO resource.
    return f"{origin}#{position}"


@dataclass
class _Place:
    """Place of a resource: the file, the NDJSON line, and the FHIRPath from the file's top resource."""

    origin: str
    source: dict
    line: str = ""
    root: str = ""
    steps: tuple[str, ...] = ()

    def child(self, step: str) -> "_Place":
        return replace(self, steps=self.steps + (step,))

    def fhirpath(self) -> str | None:
        return f"{self.root}." + ".".join(self.steps) if self.steps else None

    def where(self, default: str = "resource") -> str:
        parts = [part for part in (self.line, self.fhirpath()) if part]
        return ", ".join(parts) if parts else default


class _Reader:
    def __init__(self, definition: ConnectorDefinition, key_namespace: str | None = None,
                 loaded_keys: frozenset[str] = frozenset()):
        self.definition = definition
        # A declared source system prefixes every key, so two hospitals' Condition/1 stay apart.
        self.key_namespace = key_namespace
        # Keys that an earlier run loaded: references to them are kept although they are not records of this run.
        self.loaded_keys = loaded_keys
        self.found: list[_Found] = []
        self.problems: list[Problem] = []
        self.skipped_types: Counter = Counter()
        self.count_by_file: Counter = Counter()
        self.entries_without_resource = 0

    # --- parsing ---

    def read_file(self, path: Path) -> None:
        origin = str(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            self.problems.append(Problem(origin, "file", _text("file.unreadable", reason=error.strerror)))
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            self.problems.append(Problem(origin, f"byte {error.start}", _text("file.not_utf8"), _text("file.not_utf8.fix")))
            return
        if path.suffix.lower() == ".ndjson":
            self._read_ndjson(origin, text)
        else:
            self._read_json(origin, text)

    def read_document(self, origin: str, document: dict, source: dict, authority: str | None) -> None:
        """Read one resource or Bundle that did not come from a file (a REST response)."""
        self._visit(document, _Place(origin, dict(source)), None, None, authority)

    def namespaced(self, key: str) -> str:
        return namespaced_key(self.key_namespace, key)

    def _read_json(self, origin: str, text: str) -> None:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            self.problems.append(_json_problem(origin, error.lineno, error.colno, error.msg))
            return
        if not isinstance(document, dict):
            kind = _JSON_KINDS.get(type(document).__name__, type(document).__name__)
            self.problems.append(Problem(origin, "file", _text("json.top_level", kind=kind), _text("json.top_level.fix")))
            return
        self._visit(document, _Place(origin, {"kind": "fhir", "file": origin}), None, None, None)

    def _read_ndjson(self, origin: str, text: str) -> None:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
            except json.JSONDecodeError as error:
                self.problems.append(_json_problem(origin, number, error.colno, error.msg))
                continue
            if not isinstance(document, dict):
                kind = _JSON_KINDS.get(type(document).__name__, type(document).__name__)
                self.problems.append(Problem(origin, f"line {number}", _text("json.line", kind=kind), _text("json.line.fix")))
                continue
            place = _Place(origin, {"kind": "fhir", "file": origin, "line": number}, line=f"line {number}")
            self._visit(document, place, None, None, None)

    def _visit(self, resource, place: "_Place", full_url, bundle: _BundleScope | None, inherited_authority: str | None) -> None:
        if not isinstance(resource, dict):
            self.problems.append(
                Problem(place.origin, place.where(), _text("resource.not_object"), _text("resource.not_object.fix"))
            )
            return
        resource_type = resource.get("resourceType")
        if not isinstance(resource_type, str) or not resource_type:
            self.problems.append(Problem(place.origin, place.where(), _text("resource.no_type"), _text("resource.no_type.fix")))
            return
        if not place.root:
            place = replace(place, root=resource_type)
        # A declared source system (REST mode) wins over meta.source, so keys and SOURCE-REF authorities agree.
        authority = self.key_namespace or _meta_source(resource) or inherited_authority
        if resource_type == "Bundle":
            scope = _BundleScope(parent=bundle)
            for index, entry in enumerate(resource.get("entry") or []):
                entry_place = place.child(f"entry[{index}]")
                if not isinstance(entry, dict):
                    self.problems.append(
                        Problem(place.origin, entry_place.where(), _text("resource.not_object"), _text("entry.not_object.fix"))
                    )
                    continue
                if "resource" not in entry:
                    self.entries_without_resource += 1  # DELETE or GET requests, transaction responses
                    continue
                self._visit(entry["resource"], entry_place.child("resource"), entry.get("fullUrl"), scope, authority)
            return
        if resource_type == "Parameters":
            for index, parameter in enumerate(resource.get("parameter") or []):
                if isinstance(parameter, dict) and "resource" in parameter:
                    self._visit(parameter["resource"], place.child(f"parameter[{index}].resource"), None, bundle, authority)
            return

        full_url = full_url if isinstance(full_url, str) and full_url else None
        meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
        self.count_by_file[place.origin] += 1
        found = _Found(
            resource=resource, resource_type=resource_type, origin=place.origin,
            position=f"{place.where()} ({resource_type})" if place.steps else place.where(resource_type),
            source=dict(place.source), full_url=full_url, bundle=bundle,
            authority=authority or _base_of(full_url, resource_type), recorded=meta.get("lastUpdated"),
        )
        found.key = self.namespaced(_source_key(resource, resource_type, full_url, place.origin, place.where()))
        found.source.update({"key": found.key, "entry": place.fhirpath(), "full_url": full_url, "recorded": found.recorded})
        if "line" not in found.source:
            found.source["index"] = self.count_by_file[place.origin]
        if bundle is not None:
            bundle.members.append(found)
            if full_url:
                bundle.by_full_url.setdefault(full_url, found)
        self.found.append(found)

    # --- indexes and reference resolution ---

    def build_indexes(self) -> None:
        self.by_key: dict[str, list[_Found]] = {}
        self.by_full_url: dict[str, list[_Found]] = {}
        self.by_identifier: dict[tuple[str, str], list[_Found]] = {}
        for found in self.found:
            if isinstance(found.resource.get("id"), str):
                self.by_key.setdefault(self.namespaced(f"{found.resource_type}/{found.resource['id']}"), []).append(found)
            if found.full_url:
                self.by_full_url.setdefault(found.full_url, []).append(found)
            for identifier in found.resource.get("identifier") or []:
                if isinstance(identifier, dict) and identifier.get("value"):
                    self.by_identifier.setdefault((identifier.get("system", ""), str(identifier["value"])), []).append(found)

    @staticmethod
    def _prefer(candidates: list[_Found], origin: str) -> _Found | None:
        if not candidates:
            return None
        same_file = [found for found in candidates if found.origin == origin]
        return (same_file or candidates)[0]

    def resolve(self, holder: _Found, reference: dict) -> _Target | None:
        """Find what a Reference points at: a resource of the input, a contained one, or only its type and key."""
        declared_type = reference.get("type") if isinstance(reference.get("type"), str) else None
        text = reference.get("reference")
        if not isinstance(text, str) or not text:
            return self._resolve_identifier(holder, reference.get("identifier"), declared_type)

        if text.startswith("#"):
            for contained in holder.resource.get("contained") or []:
                if isinstance(contained, dict) and contained.get("id") == text[1:]:
                    return _Target(contained.get("resourceType"), None, contained=contained)
            return None
        scope = holder.bundle
        while scope is not None:
            if text in scope.by_full_url:
                target = scope.by_full_url[text]
                return _Target(target.resource_type, target.key, target)
            scope = scope.parent

        conditional = _CONDITIONAL.match(text)
        if conditional:
            identifier = {"system": conditional["system"] or "", "value": conditional["value"]}
            return self._resolve_identifier(holder, identifier, conditional["type"], any_system=conditional["system"] is None)
        if text.startswith("urn:"):
            target = self._prefer(self.by_full_url.get(text, []), holder.origin)
            if target is not None:
                return _Target(target.resource_type, target.key, target)
            return _Target(declared_type, text)

        literal = _LITERAL.search(text)
        if literal is None:
            return None
        key = self.namespaced(f"{literal['type']}/{literal['id']}")
        target = self._prefer(self.by_full_url.get(text, []) + self.by_key.get(key, []), holder.origin)
        if target is not None:
            return _Target(target.resource_type, target.key, target)
        return _Target(literal["type"], key)

    def _resolve_identifier(self, holder: _Found, identifier, resource_type: str | None, any_system: bool = False) -> _Target | None:
        if not isinstance(identifier, dict) or not identifier.get("value"):
            return None
        value = str(identifier["value"])
        if any_system:
            candidates = [found for (system, known), founds in self.by_identifier.items() if known == value for found in founds]
        else:
            candidates = self.by_identifier.get((identifier.get("system", ""), value), [])
        candidates = [found for found in candidates if resource_type in (None, found.resource_type)]
        if len({found.key for found in candidates}) != 1:
            return None  # unknown or ambiguous: the identifier alone gives no key
        target = self._prefer(candidates, holder.origin)
        return _Target(target.resource_type, target.key, target)

    def references_of(self, holder: _Found, record_ids: set[int]) -> dict[str, dict]:
        """Build the `references` table that templates pass to fhir_ref() and fhir_resource().

        `record` is true when the target becomes a record of this run. fhir_ref() keeps
        only those references, so none dangles on the server.
        """
        table: dict[str, dict] = {}
        for reference in _references_in(holder.resource, root=True):
            lookup = reference_lookup_key(reference)
            if lookup is None or lookup in table:
                continue
            target = self.resolve(holder, reference)
            if target is None:
                continue
            if target.contained is not None:
                resource = target.contained
            elif target.found is not None:
                resource = target.found.resource
            else:
                resource = None
            table[lookup] = {
                "type": target.resource_type,
                "key": target.key,
                "in_input": target.found is not None,
                "record": (target.found is not None and id(target.found) in record_ids) or target.key in self.loaded_keys,
                "contained": target.contained is not None,
                "resource": resource,
                "_found": target.found,
            }
        return table

    # --- patients ---

    def patient_of_patient(self, patient: _Found) -> _PatientLink:
        resource = patient.resource
        identifiers = [entry for entry in map(identifier_entry, resource.get("identifier") or []) if entry]
        usable = any(classify_identifier(entry["system"], entry["type"]) for entry in identifiers)
        # The source reference links later files that refer to this Patient without carrying it.
        # NOTE: with no known source system, two hospitals that both send Patient/1 share this
        # reference, so it is added to a Patient with an INS or IPP only when the system is known.
        if not usable or patient.authority:
            identifiers.append({"kind": "SOURCE-REF", "authority": patient.authority or "fhir", "value": patient.key})
        return _PatientLink(
            identity=("patient", id(resource)), identifiers=identifiers,
            names=_names_of(resource), birth_dates=[resource["birthDate"]] if isinstance(resource.get("birthDate"), str) else [],
            found=patient,
        )

    def explicit_patient(self, holder: _Found) -> _PatientLink | None:
        """Return the patient that the holder's subject or patient element names, or None."""
        for element in self.definition.patient_elements:
            reference = holder.resource.get(element)
            if not isinstance(reference, dict):
                continue
            target = self.resolve(holder, reference)
            if target is None:
                # A logical reference by INS or IPP to a Patient not in the input: the identifier names the patient.
                entry = identifier_entry(reference.get("identifier")) if reference.get("type") in (None, "Patient") else None
                if entry:
                    return _PatientLink(identity=("identifier", entry["system"], entry["value"]), identifiers=[entry])
                continue
            if target.found is not None and target.resource_type == "Patient":
                return target.found.patient
            if target.found is None and target.contained is None and target.resource_type in (None, "Patient") and target.key:
                authority = holder.authority or "fhir"
                return _PatientLink(
                    identity=("source-ref", authority, target.key),
                    identifiers=[{"kind": "SOURCE-REF", "authority": authority, "value": target.key}],
                )
        return None


def identifier_entry(identifier) -> dict | None:
    """An Identifier as the engine reads it ({value, system, type}), or None when it must not link persons."""
    if not isinstance(identifier, dict) or not identifier.get("value"):
        return None
    type_codes = [
        coding.get("code") for coding in ((identifier.get("type") or {}).get("coding") or [])
        if isinstance(coding, dict) and coding.get("code")
    ]
    if any(code in EXCLUDED_TYPE_CODES for code in type_codes):
        return None
    type_code = next((code for code in KNOWN_TYPE_CODES if code in type_codes), type_codes[0] if type_codes else "")
    # HL7 v2 sends an OID bare in CX-4.2 and FHIR as urn:oid:<oid>; one form links an IPP from both.
    system = str(identifier.get("system", "")).removeprefix("urn:oid:")
    return {"value": str(identifier["value"]), "system": system, "type": type_code}


def _references_in(node, root: bool = False):
    """Yield every Reference (literal or logical) in a resource, outside contained resources."""
    if isinstance(node, dict):
        if not root and (isinstance(node.get("reference"), str) or isinstance(node.get("identifier"), dict)):
            yield node
        for key, value in node.items():
            if key != "contained":
                yield from _references_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references_in(value)


def _names_of(patient: dict) -> list[str]:
    """Family and given names and name texts, which the privacy guard looks for in the output."""
    names: list[str] = []
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        for part in ("family", "given", "text"):
            value = name.get(part)
            values = value if isinstance(value, list) else [value]  # DSTU2 wrote family as a list
            names.extend(str(item) for item in values if isinstance(item, str) and item)
    return names


def _json_problem(origin: str, line: int, column: int, reason: str) -> Problem:
    return Problem(origin, f"line {line}, column {column}", _text("json.invalid", reason=reason), _text("json.invalid.fix"))


def _r4_errors(resource: dict, resource_type: str) -> list[str]:
    """Return the invalid elements of a resource, checked with the fhir.resources R4B models.

    NOTE: fhir.resources 8 has no R4 (4.0.1) models, so its R4B (4.3.0) models stand in. No
    element-by-element comparison was made for the types read here: an element that only R4B
    has would pass, and an R4 element that R4B dropped would be reported as not an R4 element.
    Messages name the element and the kind of error, never the value.
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        model = get_fhir_model_class(resource_type)
    except KeyError:
        return [_text("r4.unknown_type", type=resource_type)]
    try:
        model.model_validate(resource)
    except ValidationError as error:
        described = []
        for detail in error.errors():
            location = [part for part in detail["loc"] if part != "__root__"]
            if any(part in DROPPED_ELEMENTS for part in location):
                continue
            element = resource_type
            for part in location:
                element += f"[{part}]" if isinstance(part, int) else f".{part}"
            error_type = _ERROR_TYPE_ALIASES.get(detail["type"], detail["type"])
            kind = _text(f"r4.{error_type}") if f"r4.{error_type}" in _MESSAGES["en"] else error_type
            described.append(f"{element} ({kind})")
        return described
    return []


def _ordered(found: list[_Found], tables: dict[int, dict]) -> list[_Found]:
    """Order records so that a referenced resource comes before the records that refer to it.

    Each record is loaded in its own transaction and the server checks references on
    write, so a report must follow its observations and specimens. Cycles keep input order.
    """
    ordered: list[_Found] = []
    state: dict[int, str] = {}
    for start in found:
        stack = [(start, False)]
        while stack:
            item, expanded = stack.pop()
            marker = id(item)
            if expanded:
                state[marker] = "done"
                ordered.append(item)
                continue
            if state.get(marker):
                continue
            state[marker] = "open"
            stack.append((item, True))
            dependencies = [entry["_found"] for entry in tables[marker].values() if entry["_found"] is not None]
            if item.patient is not None and item.patient.found is not None:
                dependencies.insert(0, item.patient.found)
            for dependency in reversed(dependencies):
                if id(dependency) in tables and not state.get(id(dependency)):
                    stack.append((dependency, False))
    return ordered


def read_files(paths: list[Path], definition: ConnectorDefinition | None = None) -> ReadResult:
    definition = definition or load_definition()
    reader = _Reader(definition)
    for path in expand_paths(paths, definition.suffixes):
        reader.read_file(path)
    return _records_of(reader)


def read_documents(documents: list[tuple[str, dict, dict]], definition: ConnectorDefinition, system: str,
                   loaded_keys: frozenset[str] = frozenset()) -> ReadResult:
    """Build records from resources and Bundles fetched from a FHIR server, as `read_files` does from files.

    `documents` are (origin, resource or Bundle, source description) triples. `system`
    is the declared source system: it prefixes every key and is the authority of
    SOURCE-REF identifiers. References to `loaded_keys` are kept in the output.
    """
    reader = _Reader(definition, key_namespace=system, loaded_keys=loaded_keys)
    for origin, document, source in documents:
        reader.read_document(origin, document, source, system)
    return _records_of(reader)


def _records_of(reader: "_Reader") -> ReadResult:
    reader.build_indexes()

    # Patients first, so every other resource can take the identifiers of the Patient it names.
    for found in reader.found:
        if found.resource_type == "Patient":
            found.patient = reader.patient_of_patient(found)
    for found in reader.found:
        if found.resource_type != "Patient":
            found.patient = reader.explicit_patient(found)
    _infer_bundle_patients(reader)

    result = ReadResult(problems=list(reader.problems))
    candidates = _select_records(reader, result.problems)
    record_ids = {id(found) for found in candidates}
    tables = {id(found): reader.references_of(found, record_ids) for found in candidates}
    for found in _ordered(candidates, tables):
        result.records.append(_source_record(found, tables[id(found)]))
    _log_skipped(reader)
    return result


def _select_records(reader: _Reader, problems: list[Problem]) -> list[_Found]:
    """Return the resources that become records; the others are counted or get a problem."""
    definition = reader.definition
    selected = []
    for found in reader.found:
        if found.resource_type not in definition.resource_types:
            reader.skipped_types[found.resource_type] += 1
            continue
        errors = _r4_errors(found.resource, found.resource_type)
        if errors:
            listed = "; ".join(errors[:MAX_REPORTED_ERRORS])
            if len(errors) > MAX_REPORTED_ERRORS:
                listed += _text("resource.invalid.more", count=len(errors) - MAX_REPORTED_ERRORS)
            message = _text("resource.invalid", type=found.resource_type, errors=listed)
            problems.append(Problem(found.origin, found.position, message, _text("resource.invalid.fix")))
            continue
        if found.patient is None:
            elements = _text("resource.no_patient.or").join(definition.patient_elements)
            message = _text("resource.no_patient", type=found.resource_type, elements=elements)
            problems.append(Problem(found.origin, found.position, message, _text("resource.no_patient.fix")))
            continue
        selected.append(found)
    return selected


def _source_record(found: _Found, table: dict[str, dict]) -> SourceRecord:
    patient = found.patient
    return SourceRecord(
        kind="fhir",
        origin=found.origin,
        position=found.position,
        key=f"{found.authority}|{found.key}" if found.authority and not found.key.startswith(f"{found.authority}|") else found.key,
        data={
            "resource": found.resource,
            "patient_identifiers": patient.identifiers,
            "patient_names": patient.names,
            "patient_birth_dates": patient.birth_dates,
            "references": {lookup: {k: v for k, v in entry.items() if k != "_found"} for lookup, entry in table.items()},
            "source": found.source,
            "source_system": found.authority,
        },
        selector={"resource_type": found.resource_type},
    )


def _infer_bundle_patients(reader: _Reader) -> None:
    """Give a resource without subject or patient the patient of its Bundle, when the Bundle names exactly one.

    Genomics Reporting groupers, for example, carry no subject although the
    report that lists them does.
    """
    scopes = {id(found.bundle): found.bundle for found in reader.found if found.bundle is not None}
    for scope in scopes.values():
        patients = {found.patient.identity: found.patient for found in scope.members if found.patient is not None}
        if len(patients) != 1:
            continue
        (only,) = patients.values()
        for found in scope.members:
            if found.patient is None and not any(isinstance(found.resource.get(e), dict) for e in reader.definition.patient_elements):
                found.patient = only


def _log_skipped(reader: _Reader) -> None:
    if reader.skipped_types:
        described = ", ".join(f"{name} {count}" for name, count in sorted(reader.skipped_types.items()))
        log.warning(t("fhir.skipped_types", count=sum(reader.skipped_types.values()), types=described))
    if reader.entries_without_resource:
        log.warning(t("fhir.entries_without_resource", count=reader.entries_without_resource))
