"""Hospital FHIR servers that `sonco-fhir pull fhir --source NAME` reads, one YAML file per source.

The files live in `connectors/fhir-sources/NAME.yaml` (or the folder named by
SONCO_FHIR_SOURCES_DIR); `connectors/fhir-sources/example.yaml` documents
every key. Secrets are never written in these files: they name a file or an
environment variable, read only when a request needs them.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import load_settings
from ..errors import ConfigurationError
from ..i18n import t

AUTH_TYPES = ("none", "basic", "bearer", "smart-backend")
SIGNING_ALGORITHMS = ("RS384", "ES384")
DEFAULT_PAGE_SIZE = 100
KNOWN_KEYS = {"system", "base_url", "auth", "tls", "resource_types", "includes", "elements", "page_size",
              "cohort", "schedule", "bulk_export", "deleted", "retry", "timeout_seconds"}


@dataclass(frozen=True)
class Secret:
    """A secret's location: a file (its first line) or an environment variable. The value itself is never stored here."""

    file: Path | None = None
    env: str | None = None

    def describe(self) -> str:
        return f"file {self.file}" if self.file else f"environment variable {self.env}"

    def read(self) -> str:
        if self.file is not None:
            try:
                value = self.file.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ConfigurationError(t("pull.secret_unreadable", place=self.describe(), reason=error.strerror)) from None
        else:
            value = os.environ.get(self.env or "", "").strip()
        if not value:
            raise ConfigurationError(t("pull.secret_empty", place=self.describe()))
        return value


@dataclass(frozen=True)
class AuthSettings:
    type: str = "none"
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    token_url: str | None = None
    client_id: str | None = None
    private_key: Secret | None = None
    key_id: str | None = None
    algorithm: str = "RS384"
    scope: str | None = None


@dataclass(frozen=True)
class TlsSettings:
    client_certificate: Path | None = None
    client_key: Path | None = None
    # A CA bundle file for servers signed by a hospital CA. None uses the system CAs.
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_wait_seconds: float = 120.0


@dataclass(frozen=True)
class SourceSettings:
    name: str
    path: Path
    base_url: str
    system: str
    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    # Empty: every type of files.resource_types in connectors/fhir.yaml.
    resource_types: tuple[str, ...] = ()
    includes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    elements: dict[str, tuple[str, ...]] = field(default_factory=dict)
    page_size: int = DEFAULT_PAGE_SIZE
    identifiers_file: Path | None = None
    known_patients: bool = False
    schedule: str | None = None
    bulk_group: str | None = None
    detect_deleted: bool = True
    retry: RetrySettings = field(default_factory=RetrySettings)
    timeout_seconds: float = 60.0


def sources_dir() -> Path:
    configured = os.environ.get("SONCO_FHIR_SOURCES_DIR")
    if configured:
        return Path(configured)
    return load_settings().mappings_dir.parent / "connectors" / "fhir-sources"


def load_source(name: str, folder: Path | None = None) -> SourceSettings:
    folder = folder or sources_dir()
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(candidate.stem for candidate in folder.glob("*.yaml")) if folder.is_dir() else []
        raise ConfigurationError(t("pull.source_not_found", name=name, path=path, known=", ".join(known) or "-"))
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigurationError(t("pull.source_invalid_yaml", path=path, reason=error)) from None
    if not isinstance(content, dict):
        raise ConfigurationError(t("pull.source_not_mapping", path=path))
    return _parse(content, path, folder)


def _parse(content: dict, path: Path, folder: Path) -> SourceSettings:
    unknown = sorted(set(content) - KNOWN_KEYS)
    if unknown:
        raise ConfigurationError(t("pull.source_unknown_keys", path=path, keys=", ".join(unknown), known=", ".join(sorted(KNOWN_KEYS))))
    base_url = content.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigurationError(t("pull.source_bad_value", path=path, setting="base_url", expected="http(s)://host/path"))
    base_url = base_url.rstrip("/")

    cohort = _section(content, "cohort", path)
    identifiers_file = _path(cohort.get("identifiers_file"), folder)
    known_patients = bool(cohort.get("known_patients", False))
    if identifiers_file is None and not known_patients:
        raise ConfigurationError(t("pull.source_no_cohort", path=path))

    bulk = _section(content, "bulk_export", path)
    retry = _section(content, "retry", path)
    return SourceSettings(
        name=path.stem,
        path=path,
        base_url=base_url,
        system=str(content.get("system") or base_url),
        auth=_auth(_section(content, "auth", path), path, folder),
        tls=_tls(_section(content, "tls", path), folder),
        resource_types=_names(content.get("resource_types"), (), path, "resource_types"),
        includes={str(k): _names(v, (), path, f"includes.{k}") for k, v in _section(content, "includes", path).items()},
        elements={str(k): _names(v, (), path, f"elements.{k}") for k, v in _section(content, "elements", path).items()},
        page_size=_positive(content.get("page_size", DEFAULT_PAGE_SIZE), path, "page_size"),
        identifiers_file=identifiers_file,
        known_patients=known_patients,
        schedule=str(content["schedule"]) if content.get("schedule") else None,
        bulk_group=str(bulk["group"]) if bulk.get("group") else None,
        detect_deleted=str(content.get("deleted", "history")) == "history",
        retry=RetrySettings(
            max_attempts=_positive(retry.get("max_attempts", 5), path, "retry.max_attempts"),
            backoff_seconds=float(retry.get("backoff_seconds", 1.0)),
            max_wait_seconds=float(retry.get("max_wait_seconds", 120.0)),
        ),
        timeout_seconds=float(content.get("timeout_seconds", 60.0)),
    )


def _section(content: dict, key: str, path: Path) -> dict:
    value = content.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigurationError(t("pull.source_bad_value", path=path, setting=key, expected="a mapping (key: value)"))
    return value


def _names(value, default: tuple[str, ...], path: Path, key: str) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigurationError(t("pull.source_bad_value", path=path, setting=key, expected="a list of names"))
    return tuple(value)


def _positive(value, path: Path, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(t("pull.source_bad_value", path=path, setting=key, expected="a positive integer"))
    return value


def _path(value, folder: Path) -> Path | None:
    if not value:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else (folder / path)


def _secret(section: dict, key: str, path: Path, folder: Path) -> Secret | None:
    """Read `<key>_file` or `<key>_env` from an auth section."""
    file_value, env_value = section.get(f"{key}_file"), section.get(f"{key}_env")
    if file_value and env_value:
        raise ConfigurationError(t("pull.secret_twice", path=path, setting=key))
    if file_value:
        return Secret(file=_path(file_value, folder))
    if env_value:
        return Secret(env=str(env_value))
    if section.get(key):
        raise ConfigurationError(t("pull.secret_inline", path=path, setting=key))
    return None


def _auth(section: dict, path: Path, folder: Path) -> AuthSettings:
    kind = str(section.get("type", "none"))
    if kind not in AUTH_TYPES:
        raise ConfigurationError(t("pull.source_bad_value", path=path, setting="auth.type", expected=", ".join(AUTH_TYPES)))
    auth = AuthSettings(
        type=kind,
        username=str(section["username"]) if section.get("username") else None,
        password=_secret(section, "password", path, folder),
        token=_secret(section, "token", path, folder),
        token_url=section.get("token_url"),
        client_id=str(section["client_id"]) if section.get("client_id") else None,
        private_key=_secret(section, "private_key", path, folder),
        key_id=str(section["key_id"]) if section.get("key_id") else None,
        algorithm=str(section.get("algorithm", "RS384")),
        scope=section.get("scope"),
    )
    required = {
        "basic": ("username", "password"),
        "bearer": ("token",),
        "smart-backend": ("token_url", "client_id", "private_key"),
    }.get(kind, ())
    for key in required:
        if getattr(auth, key) is None:
            raise ConfigurationError(t("pull.auth_missing", path=path, auth=kind, setting=key))
    if kind == "smart-backend" and auth.algorithm not in SIGNING_ALGORITHMS:
        raise ConfigurationError(
            t("pull.source_bad_value", path=path, setting="auth.algorithm", expected=", ".join(SIGNING_ALGORITHMS))
        )
    return auth


def _tls(section: dict, folder: Path) -> TlsSettings:
    return TlsSettings(
        client_certificate=_path(section.get("client_certificate"), folder),
        client_key=_path(section.get("client_key"), folder),
        ca_bundle=_path(section.get("ca_bundle"), folder),
    )
