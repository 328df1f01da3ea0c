"""The mapping engine: selects the mapping files that apply to a record and renders them.

A mapping file is YAML; its templates are JSON-e (https://json-e.js.org),
evaluated with the record's data, the cohort patient and the functions of
`functions.py`. The format is documented key by key in docs/mapping-format.md.
"""

import functools
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import jsone
import yaml
from jsone import builtins as jsone_builtins
from jsone.interpreter import Interpreter
from jsone.parser import Parser
from jsone.render import SyntaxError as JsoneSyntaxError
from jsone.shared import DeleteMarker, TemplateError, fromNow

from ..canonical import MAPPING_TAG_SYSTEM, PSEUDONYM_SYSTEM, profile_url
from ..connectors.base import SourceRecord
from ..errors import ConfigurationError, Problem
from ..i18n import t
from ..privacy.crosswalk import Crosswalk, IdentityConflict
from ..privacy.guard import Identity, find_leaks
from ..privacy.pseudonym import KINDS, Pseudonymiser, classify_identifier
from .conceptmap import ConceptMaps
from .dates import InvalidDate
from .functions import template_functions
from .provenance import provenance_for

REQUIRED_KEYS = ("mapping", "version", "source", "patient", "resources")
KNOWN_KEYS = set(REQUIRED_KEYS) | {"description", "applies_to", "let", "provenance"}
RESOURCE_KEYS = {"key", "profile", "for_each", "when", "template"}


@dataclass
class MappingFile:
    path: Path
    name: str
    version: str
    source: str
    applies_to: dict
    let: dict
    patient: dict
    resources: list[dict]
    provenance: dict

    def applies(self, record: SourceRecord) -> bool:
        for selector, accepted in self.applies_to.items():
            accepted = accepted if isinstance(accepted, list) else [accepted]
            if record.selector.get(selector) not in accepted:
                return False
        return True


@dataclass
class MappedRecord:
    record: SourceRecord
    patient_id: str | None = None
    resources: list[dict] = field(default_factory=list)
    mappings: list[MappingFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    identity: Identity = field(default_factory=Identity)
    recorded: str | None = None
    source_system: str | None = None


def load_mapping_file(path: Path) -> MappingFile:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = t("mapping.line", line=mark.line + 1) if mark else ""
        raise ConfigurationError(t("mapping.invalid_yaml", path=path, line=line, reason=getattr(error, "problem", error))) from None
    if not isinstance(content, dict):
        raise ConfigurationError(t("mapping.not_a_mapping", path=path, keys=", ".join(REQUIRED_KEYS)))
    missing = [key for key in REQUIRED_KEYS if key not in content]
    unknown = sorted(set(content) - KNOWN_KEYS)
    if missing:
        raise ConfigurationError(t("mapping.missing_keys", path=path, keys=", ".join(missing)))
    if unknown:
        raise ConfigurationError(t("mapping.unknown_keys", path=path, keys=", ".join(unknown), known=", ".join(sorted(KNOWN_KEYS))))
    for index, entry in enumerate(content["resources"]):
        if not isinstance(entry, dict) or "template" not in entry or "key" not in entry:
            raise ConfigurationError(t("mapping.resource_needs_keys", path=path, index=index))
        extra = sorted(set(entry) - RESOURCE_KEYS)
        if extra:
            raise ConfigurationError(t("mapping.resource_unknown_keys", path=path, index=index, keys=", ".join(extra), known=", ".join(sorted(RESOURCE_KEYS))))
    return MappingFile(
        path=path,
        name=str(content["mapping"]),
        version=str(content["version"]),
        source=str(content["source"]),
        applies_to=content.get("applies_to") or {},
        let=content.get("let") or {},
        patient=content["patient"],
        resources=content["resources"],
        provenance=content.get("provenance") or {},
    )


class MappingEngine:
    def __init__(self, mappings_dir: Path, pseudonymiser: Pseudonymiser, crosswalk: Crosswalk):
        self.mappings_dir = mappings_dir
        self.pseudonymiser = pseudonymiser
        self.crosswalk = crosswalk
        self.conceptmaps = ConceptMaps(mappings_dir / "conceptmaps")
        self._by_source: dict[str, list[MappingFile]] = {}

    def mappings_for(self, source: str) -> list[MappingFile]:
        if source not in self._by_source:
            folder = self.mappings_dir / source
            files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
            if not files:
                raise ConfigurationError(t("mapping.none_in_folder", folder=folder))
            self._by_source[source] = [load_mapping_file(path) for path in files]
        return self._by_source[source]

    def map_record(self, record: SourceRecord) -> MappedRecord:
        result = MappedRecord(record)
        applicable = [mapping for mapping in self.mappings_for(record.kind) if mapping.applies(record)]
        if not applicable:
            described = ", ".join(f"{key}={value}" for key, value in record.selector.items())
            result.problems.append(
                Problem(record.origin, record.position, t("problem.no_mapping", selector=described),
                        t("problem.no_mapping.fix", folder=self.mappings_dir / record.kind))
            )
            return result
        for mapping in applicable:
            try:
                self._apply(mapping, record, result)
            except _MappingFailure as failure:
                result.problems.append(Problem(record.origin, record.position, f"{mapping.path.name}: {failure}", failure.fix))
        if not result.problems and result.patient_id:
            result.resources = _deduplicate(result.resources)
            result.resources.append(
                provenance_for(
                    record, result.resources, result.mappings,
                    self.pseudonymiser.resource_id("Provenance", record.kind, record.key),
                    self.pseudonymiser.digest("source-file", record.origin),
                    result.recorded, result.source_system,
                )
            )
            result.problems.extend(find_leaks(result.resources, result.identity, record.where))
        return result

    # --- one mapping file on one record ---

    def _apply(self, mapping: MappingFile, record: SourceRecord, result: MappedRecord) -> None:
        functions = template_functions(self.pseudonymiser, self.conceptmaps)
        # `now` and json-e's builtins, which jsone.render would add at each render: see _render_template.
        context = {"now": fromNow("0 seconds", None), **_JSONE_BUILTINS, **functions, **record.data}
        for name, expression in mapping.let.items():
            context[name] = _render(expression, context, f"let.{name}")

        patient_id, identity = self._resolve_patient(mapping, context)
        result.patient_id = patient_id
        result.identity.identifiers.extend(identity.identifiers)
        result.identity.names.extend(identity.names)
        result.identity.birth_dates.extend(identity.birth_dates)
        context["patient"] = {"id": patient_id, "reference": f"Patient/{patient_id}"}
        replaced_id = self._resolve_replaced(mapping, context, patient_id, result.identity)
        if replaced_id:
            context["patient"].update(replaces_id=replaced_id, replaces_reference=f"Patient/{replaced_id}")

        produced: list[dict] = []
        for index, entry in enumerate(mapping.resources):
            where = f"resources[{index}]"
            items = [None]
            if "for_each" in entry:
                items = _render(entry["for_each"], context, f"{where}.for_each") or []
                if not isinstance(items, list):
                    raise _MappingFailure(t("problem.for_each_not_list", where=where), t("problem.template.fix"))
            for item in items:
                local = dict(context, item=item) if item is not None else context
                if "when" in entry and not _render({"$eval": entry["when"]}, local, f"{where}.when"):
                    continue
                resource = _prune(_render(entry["template"], local, f"{where}.template"))
                if not isinstance(resource, dict) or "resourceType" not in resource:
                    raise _MappingFailure(t("problem.template_not_resource", where=where), t("problem.template.fix"))
                key = _render(entry["key"], local, f"{where}.key")
                key_parts = [str(part) for part in (key if isinstance(key, list) else [key])]
                if resource["resourceType"] == "Patient":
                    # Whatever the template wrote, a Patient carries the pseudonym and nothing else. Only a
                    # merged patient (patient.replaces) may be named, by the pseudonym the crosswalk gave it.
                    named = resource.get("id") if replaced_id and resource.get("id") == replaced_id else patient_id
                    resource["id"] = named
                    resource["identifier"] = [pseudonym_identifier(named)]
                else:
                    resource["id"] = self.pseudonymiser.resource_id(resource["resourceType"], *key_parts)
                meta = resource.setdefault("meta", {})
                if "profile" in entry:
                    meta["profile"] = [profile_url(entry["profile"])]
                meta["tag"] = [{"system": MAPPING_TAG_SYSTEM, "code": f"{mapping.name}@{mapping.version}"}]
                produced.append(resource)

        if not any(resource["resourceType"] == "Patient" for resource in produced + result.resources):
            produced.insert(0, minimal_patient(patient_id))
        result.resources.extend(produced)
        result.mappings.append(mapping)
        if mapping.provenance:
            details = _render(mapping.provenance, context, "provenance") or {}
            result.recorded = result.recorded or details.get("recorded")
            result.source_system = result.source_system or details.get("source_system")

    def _resolve_patient(self, mapping: MappingFile, context: dict) -> tuple[str, Identity]:
        section = mapping.patient
        identifiers = _render(section.get("identifiers", []), context, "patient.identifiers") or []
        tokens, raw_values = self._identifier_tokens(identifiers)
        if not tokens:
            raise _MappingFailure(t("problem.no_patient_identifier"), t("problem.no_patient_identifier.fix"))
        try:
            patient_id = self.crosswalk.resolve(tokens)
        except IdentityConflict as conflict:
            raise _MappingFailure(t("problem.identity_conflict", count=conflict.count), t("problem.identity_conflict.fix")) from None
        identity = Identity(
            identifiers=raw_values,
            names=[str(name) for name in _render(section.get("names", []), context, "patient.names") or [] if name],
            birth_dates=[str(d) for d in _render(section.get("birth_dates", []), context, "patient.birth_dates") or [] if d],
        )
        return patient_id, identity

    def _resolve_replaced(self, mapping: MappingFile, context: dict, patient_id: str, identity: Identity) -> str | None:
        """Link the identifiers of `patient.replaces` (a merge) to the record's patient; return the merged patient's pseudonym.

        Identifiers that no other cohort patient has join the record's patient, and nothing
        else is needed: None. Identifiers of another cohort patient keep pointing to it, because
        the crosswalk never moves a token, and that patient's pseudonym is returned.
        """
        identifiers = _render(mapping.patient.get("replaces", []), context, "patient.replaces") or []
        tokens, raw_values = self._identifier_tokens(identifiers)
        identity.identifiers.extend(raw_values)
        if not tokens:
            return None
        own_tokens, _ = self._identifier_tokens(_render(mapping.patient.get("identifiers", []), context, "patient.identifiers") or [])
        try:
            self.crosswalk.resolve(own_tokens + tokens)
            return None
        except IdentityConflict:
            pass
        try:
            replaced_id = self.crosswalk.resolve(tokens)
        except IdentityConflict as conflict:
            raise _MappingFailure(t("problem.identity_conflict", count=conflict.count), t("problem.identity_conflict.fix")) from None
        return replaced_id if replaced_id != patient_id else None

    def _identifier_tokens(self, identifiers: list[dict]) -> tuple[list[tuple[str, str]], list[str]]:
        tokens: list[tuple[str, str]] = []
        raw_values: list[str] = []
        for identifier in identifiers:
            value = str(identifier.get("value") or "").strip()
            if not value:
                continue
            kind = identifier.get("kind") or classify_identifier(identifier.get("system", ""), identifier.get("type", ""))
            if kind not in KINDS:
                continue
            # HL7 v2 sends an assigning authority's OID bare, FHIR as urn:oid:, so both link.
            authority = (identifier.get("system") or identifier.get("authority") or "").removeprefix("urn:oid:")
            tokens.append((kind, self.pseudonymiser.token(kind, authority, value)))
            raw_values.append(value)
        return tokens, raw_values


class _MappingFailure(Exception):
    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.fix = fix


def minimal_patient(patient_id: str) -> dict:
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": {"profile": [profile_url("sonco-patient")]},
        "identifier": [pseudonym_identifier(patient_id)],
    }


def pseudonym_identifier(patient_id: str) -> dict:
    return {
        "use": "secondary",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"}]},
        "system": PSEUDONYM_SYSTEM,
        "value": patient_id,
    }


# JSON-e parses every expression again at each render, which took about a third of the mapping
# time in bench/hl7v2. These replacements parse each distinct expression once and keep its tree,
# which the interpreter only reads.
# NOTE: they replace two module functions of json-e's renderer (checked with json-e 4.8.4), so a
# json-e upgrade must keep `parse` and `parse_until_terminator` with these signatures. _render_template
# also copies jsone.render from that version and calls its renderValue and builtins.build.
@functools.lru_cache(maxsize=8192)
def _expression_tree(source: str, terminator: str | None):
    parser = Parser(source, _renderer.tokenizer)
    tree = parser.parse()
    token = parser.current_token
    if terminator is None:
        if token is not None:
            raise JsoneSyntaxError.unexpected(token)
        return tree, None
    if not token:
        raise JsoneSyntaxError("unterminated ${..} expression")
    if token.kind != terminator:
        raise JsoneSyntaxError.unexpected(token)
    return tree, token.start


def _parse_cached(source, context):
    tree, _ = _expression_tree(source, None)
    return Interpreter(context).interpret(tree)


def _parse_until_terminator_cached(source, context, terminator):
    tree, end = _expression_tree(source, terminator)
    return Interpreter(context).interpret(tree), end


# `jsone.render` is the render function, which hides the module of the same name.
_renderer = importlib.import_module("jsone.render")
_renderer.parse = _parse_cached
_renderer.parse_until_terminator = _parse_until_terminator_cached


# json-e's builtins are closures that take the context as an argument, so one set serves every render.
_JSONE_BUILTINS = jsone_builtins.build()
# The rule of jsone.render for the top-level keys of a context.
_CONTEXT_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
_checked_context_keys: set[str] = set()
_MAX_CHECKED_CONTEXT_KEYS = 100_000


def _render(template, context: dict, where: str):
    try:
        return _render_template(template, context)
    except InvalidDate as error:
        raise _MappingFailure(f"{where}: {error}", t("problem.date.fix")) from None
    except jsone.JSONTemplateError as error:
        raise _MappingFailure(f"{where}: {error}", t("problem.template.fix")) from None
    except (ValueError, TypeError, KeyError) as error:
        raise _MappingFailure(f"{where}: {error}") from None


def _render_template(template, context: dict):
    """Render a JSON-e template as jsone.render does, for a context that already contains `now` and json-e's builtins.

    jsone.render builds the builtins, reads the clock and checks every context key at each call: about
    a fifth of map_record time under cProfile in bench/hl7v2. _apply adds the builtins and `now` once
    per mapping file and record, so `now` is the time that mapping file started on the record.
    """
    if not _checked_context_keys.issuperset(context):
        if not all(_CONTEXT_KEY.match(key) for key in context):
            raise TemplateError("top level keys of context must follow /[a-zA-Z_][a-zA-Z0-9_]*/")
        if len(_checked_context_keys) < _MAX_CHECKED_CONTEXT_KEYS:
            _checked_context_keys.update(context)
    rendered = _renderer.renderValue(template, context)
    if rendered is DeleteMarker:
        return None
    if _contains_functions(rendered):
        raise TemplateError("evaluated template contained uncalled functions")
    return rendered


def _contains_functions(value) -> bool:
    """Return True when a rendered value contains a callable, walking lists and dicts as jsone.render does."""
    pending = [value]
    while pending:
        node = pending.pop()
        if type(node) is str:
            continue
        if hasattr(node, "__call__"):
            return True
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
    return False


def _prune(node):
    """Drop None, empty strings, empty lists and empty objects: FHIR JSON allows none of them."""
    if isinstance(node, dict):
        pruned = {key: _prune(value) for key, value in node.items()}
        return {key: value for key, value in pruned.items() if value not in (None, "", [], {})}
    if isinstance(node, list):
        pruned = [_prune(value) for value in node]
        return [value for value in pruned if value not in (None, "", [], {})]
    return node


def _deduplicate(resources: list[dict]) -> list[dict]:
    """Keep one resource per id; a later mapping's version of the same resource wins."""
    by_id: dict[tuple[str, str], dict] = {}
    for resource in resources:
        by_id[(resource["resourceType"], resource["id"])] = resource
    return list(by_id.values())
