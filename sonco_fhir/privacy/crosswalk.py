"""Identity crosswalk: which identifier pseudonyms belong to which cohort patient.

It links the IPP of one hospital, the INS and the SPICE or HYGEN patient
id of one person, so that every source ends up on the same Patient. It
stores only HMAC tokens, never a raw identifier, and lives beside the
adapter (the trusted side), not in the cohort server.
"""

import sqlite3
from pathlib import Path

from .pseudonym import KINDS


class IdentityConflict(Exception):
    """The identifiers of one record already belong to two different cohort patients."""

    def __init__(self, count: int):
        super().__init__(f"{count} cohort patients")
        self.count = count


class Crosswalk:
    def __init__(self, path: Path | None, read_only: bool = False):
        self._overlay: dict[str, str] = {}
        self._read_only = read_only
        self._db: sqlite3.Connection | None = None
        if path is not None and (not read_only or path.exists()):
            path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
            self._db = sqlite3.connect(uri, uri=True)
            if not read_only:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS identifier_token"
                    " (token TEXT PRIMARY KEY, kind TEXT NOT NULL, person TEXT NOT NULL)"
                )
                self._db.commit()

    def _lookup(self, token: str) -> str | None:
        if token in self._overlay:
            return self._overlay[token]
        if self._db is None:
            return None
        row = self._db.execute("SELECT person FROM identifier_token WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None

    def knows(self, token: str) -> bool:
        """Return whether the token is linked to a cohort patient, stored or linked earlier in this run."""
        return self._lookup(token) is not None

    def resolve(self, tokens: list[tuple[str, str]]) -> str:
        """Return the cohort pseudonym for (kind, token) pairs, recording new links."""
        if not tokens:
            raise ValueError("no identifier to resolve")
        persons = {person for _, token in tokens if (person := self._lookup(token))}
        if len(persons) > 1:
            raise IdentityConflict(len(persons))
        if persons:
            person = persons.pop()
        else:
            strongest = min(tokens, key=lambda pair: KINDS.index(pair[0]) if pair[0] in KINDS else len(KINDS))
            person = strongest[1]
        new_links = [(token, kind, person) for kind, token in dict.fromkeys(tokens) if self._lookup(token) is None]
        if new_links:
            self._store(new_links)
        return person

    def _store(self, links: list[tuple[str, str, str]]) -> None:
        """Record (token, kind, person) links in one transaction: one disk sync per record, not per identifier."""
        if self._read_only or self._db is None:
            self._overlay.update((token, person) for token, _, person in links)
            return
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO identifier_token (token, kind, person) VALUES (?, ?, ?)", links)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
