"""Settings, read from environment variables with defaults for a checkout of the repository."""

import os
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    fhir_url: str
    mappings_dir: Path
    profiles_dir: Path
    server_dir: Path
    server_port: int
    key_file: Path

    @property
    def crosswalk_file(self) -> Path:
        return self.data_dir / "identity-crosswalk.sqlite"

    def describe(self) -> dict[str, str]:
        """Return the resolved settings to print at the start of a run (no secret among them)."""
        return {
            "SONCO_DATA_DIR": str(self.data_dir),
            "SONCO_FHIR_URL": self.fhir_url,
            "SONCO_MAPPINGS_DIR": str(self.mappings_dir),
            "SONCO_PSEUDONYM_KEY_FILE": str(self.key_file),
        }


def load_settings() -> Settings:
    env = os.environ
    data_dir = Path(env.get("SONCO_DATA_DIR", REPOSITORY / "var")).resolve()
    port = int(env.get("SONCO_SERVER_PORT", "8080"))
    return Settings(
        data_dir=data_dir,
        fhir_url=env.get("SONCO_FHIR_URL", f"http://127.0.0.1:{port}/fhir").rstrip("/"),
        mappings_dir=Path(env.get("SONCO_MAPPINGS_DIR", REPOSITORY / "mappings")).resolve(),
        profiles_dir=Path(env.get("SONCO_PROFILES_DIR", REPOSITORY / "profiles")).resolve(),
        server_dir=Path(env.get("SONCO_SERVER_DIR", REPOSITORY / "server")).resolve(),
        server_port=port,
        key_file=Path(env.get("SONCO_PSEUDONYM_KEY_FILE", data_dir / "pseudonym.key")),
    )
