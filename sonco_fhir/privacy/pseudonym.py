"""Keyed HMAC pseudonyms for patient identifiers and resource ids.

The key never leaves the adapter's host. Without it, a pseudonym cannot
be linked back to an INS or an IPP, even by trying every possible value.
"""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from ..errors import ConfigurationError
from ..i18n import t

KEY_ENV = "SONCO_PSEUDONYM_KEY"
KEY_FILE_ENV = "SONCO_PSEUDONYM_KEY_FILE"
MIN_KEY_BYTES = 32
ID_LENGTH = 40  # hex characters of HMAC-SHA256 kept: 160 bits, within FHIR's 64-character id limit

# Identifier kinds, strongest first: the strongest one present names a new cohort patient.
KINDS = ("INS-NIR", "INS-NIA", "IPP", "SPICE", "HYGEN", "SOURCE-REF")

# INS namespaces (OIDs) from the ANS référentiel INS and FR Core. The test and demo
# NIR namespaces count as INS-NIR because test identities only exist in test feeds.
INS_NIR_OIDS = {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
INS_NIA_OIDS = {"1.2.250.1.213.1.4.9"}


def classify_identifier(system: str, type_code: str = "") -> str | None:
    """Return the identifier kind of a (system, type) pair, or None when unknown."""
    oid = system.removeprefix("urn:oid:")
    if type_code == "NH":
        return None  # the billing NIR shares the INS OID but may be a parent's number
    if oid in INS_NIR_OIDS or type_code in ("INS-NIR", "INS-NIR-TEST", "INS-NIR-DEMO"):
        return "INS-NIR"
    if oid in INS_NIA_OIDS or type_code == "INS-NIA":
        return "INS-NIA"
    if type_code in ("PI", "MR"):
        return "IPP"
    return None


def generate_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")


def load_key(key_file: Path | None) -> bytes:
    """Read the key from SONCO_PSEUDONYM_KEY, else SONCO_PSEUDONYM_KEY_FILE, else `key_file`."""
    value = os.environ.get(KEY_ENV)
    where = KEY_ENV
    if not value:
        file_name = os.environ.get(KEY_FILE_ENV) or (str(key_file) if key_file else "")
        where = file_name
        if not file_name or not Path(file_name).is_file():
            raise ConfigurationError(t("key.missing", path=file_name or "-", env=KEY_ENV, file_env=KEY_FILE_ENV))
        value = Path(file_name).read_text(encoding="utf-8").strip()
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(t("key.too_short", where=where, minimum=MIN_KEY_BYTES))
    return key


class Pseudonymiser:
    def __init__(self, key: bytes):
        self._key = key

    def digest(self, *parts: str) -> str:
        message = "\x1f".join(parts).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:ID_LENGTH]

    def token(self, kind: str, authority: str, value: str) -> str:
        """Pseudonym of one identifier; INS tokens ignore the authority (one national namespace)."""
        if kind.startswith("INS"):
            authority = ""
        return self.digest("identifier", kind, authority, value.strip())

    def resource_id(self, resource_type: str, *key_parts: str) -> str:
        return self.digest("resource", resource_type, *key_parts)
