"""State of the pulls from one FHIR source, in SQLite under the data folder.

Each change is one SQLite transaction, so a run stopped at any point leaves
the last successful checkpoint intact. The tables:

- `checkpoint`: per resource type, the server time at the start of the last
  successful run, from which the next run searches `_lastUpdated=gt...`;
- `run` and `run_patient`: the unfinished run, if any, and the patients it
  completed, so a resumed run skips them and keeps its start time;
- `pulled_patient`: patients whose data was pulled in full once; a patient
  new to the cohort gets a full pull even in an incremental run;
- `loaded`: every source key loaded into the cohort server, so references to
  resources of earlier runs are kept and deletions at the source are recognised.

Keys are source keys (`<system>|<Type>/<id>`): they hold no identifier of a person.
"""

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (resource_type TEXT PRIMARY KEY, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run (id INTEGER PRIMARY KEY CHECK (id = 1), started TEXT NOT NULL, mode TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_patient (patient_key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS pulled_patient (patient_key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS loaded (key TEXT PRIMARY KEY, resource_type TEXT NOT NULL, deleted_at TEXT);
"""


def state_file(data_dir: Path, source_name: str) -> Path:
    return data_dir / "fhir-pull" / f"{source_name}.sqlite"


class PullState:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        self.db.close()

    # --- checkpoints ---

    def since(self, resource_type: str) -> str | None:
        row = self.db.execute("SELECT since FROM checkpoint WHERE resource_type = ?", (resource_type,)).fetchone()
        return row[0] if row else None

    def reset(self) -> None:
        """Forget checkpoints and the unfinished run, so the next run pulls everything again."""
        with self.db:
            self.db.execute("DELETE FROM checkpoint")
            self.db.execute("DELETE FROM run")
            self.db.execute("DELETE FROM run_patient")
            self.db.execute("DELETE FROM pulled_patient")

    # --- the current run ---

    def unfinished_run(self) -> tuple[str, str] | None:
        """Return (start time, mode) of a run that was stopped before its end, or None."""
        row = self.db.execute("SELECT started, mode FROM run WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else None

    def start_run(self, started: str, mode: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM run_patient")
            self.db.execute("INSERT OR REPLACE INTO run (id, started, mode) VALUES (1, ?, ?)", (started, mode))

    def patient_done_in_run(self, patient_key: str) -> bool:
        return self.db.execute("SELECT 1 FROM run_patient WHERE patient_key = ?", (patient_key,)).fetchone() is not None

    def pulled_before(self, patient_key: str) -> bool:
        return self.db.execute("SELECT 1 FROM pulled_patient WHERE patient_key = ?", (patient_key,)).fetchone() is not None

    def finish_patient(self, patient_key: str, loaded: list[tuple[str, str]]) -> None:
        """Record a patient's loaded resources and mark it done in this run, in one transaction."""
        with self.db:
            self._record_loaded(loaded)
            self.db.execute("INSERT OR IGNORE INTO run_patient (patient_key) VALUES (?)", (patient_key,))

    def record_loaded(self, loaded: list[tuple[str, str]]) -> None:
        with self.db:
            self._record_loaded(loaded)

    def _record_loaded(self, loaded: list[tuple[str, str]]) -> None:
        self.db.executemany(
            "INSERT INTO loaded (key, resource_type, deleted_at) VALUES (?, ?, NULL)"
            " ON CONFLICT (key) DO UPDATE SET deleted_at = NULL",
            loaded,
        )

    def finish_run(self, resource_types: list[str]) -> None:
        """Advance every type's checkpoint to the run's start and close the run, in one transaction."""
        run = self.unfinished_run()
        if run is None:
            return
        started = run[0]
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO checkpoint (resource_type, since) VALUES (?, ?)",
                [(resource_type, started) for resource_type in resource_types],
            )
            self.db.execute("INSERT OR IGNORE INTO pulled_patient (patient_key) SELECT patient_key FROM run_patient")
            self.db.execute("DELETE FROM run_patient")
            self.db.execute("DELETE FROM run")

    # --- loaded resources ---

    def loaded_keys(self) -> frozenset[str]:
        return frozenset(row[0] for row in self.db.execute("SELECT key FROM loaded WHERE deleted_at IS NULL"))

    def mark_deleted(self, key: str, when: str) -> bool:
        """Mark a loaded key as deleted at the source. Returns False when the key was never loaded or already marked."""
        with self.db:
            cursor = self.db.execute("UPDATE loaded SET deleted_at = ? WHERE key = ? AND deleted_at IS NULL", (when, key))
        return cursor.rowcount == 1
