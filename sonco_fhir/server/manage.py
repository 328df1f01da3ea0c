"""Build (once, cached), start in the background, wait until ready, stop cleanly.

The Maven build runs only when the jar is missing or older than a source
file of `server/`. The server's stdout and stderr go to a log file under the
data directory; its pid is kept beside it.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..config import Settings
from ..errors import ExitCode, SoncoError
from ..i18n import t

log = logging.getLogger(__name__)

JAR_NAME = "sonco-fhir-server.jar"
START_TIMEOUT_SECONDS = int(os.environ.get("SONCO_SERVER_START_TIMEOUT", "300"))
STOP_TIMEOUT_SECONDS = 60
JAVA_OPTIONS = os.environ.get("SONCO_SERVER_JAVA_OPTIONS", "-Xmx1500m").split()


def _notify(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _exited(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reaps the server when this process started it
        if finished == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _log_tail(path: Path, lines: int = 20) -> str:
    """Return the last lines of the server log, so a failed start explains itself."""
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n" + "\n".join(content[-lines:])


def jar_path(settings: Settings) -> Path:
    return settings.server_dir / "target" / JAR_NAME


def _pid_file(settings: Settings) -> Path:
    return settings.data_dir / "server" / "hapi.pid"


def log_file(settings: Settings) -> Path:
    return settings.data_dir / "server" / "hapi.log"


def _needs_build(settings: Settings) -> bool:
    jar = jar_path(settings)
    if not jar.exists():
        return True
    built = jar.stat().st_mtime
    sources = [settings.server_dir / "pom.xml", *(settings.server_dir / "src").rglob("*")]
    return any(path.is_file() and path.stat().st_mtime > built for path in sources)


def build(settings: Settings, force: bool = False) -> Path:
    if not force and not _needs_build(settings):
        return jar_path(settings)
    build_log = settings.data_dir / "server" / "maven-build.log"
    build_log.parent.mkdir(parents=True, exist_ok=True)
    _notify(t("server.building"))
    with open(build_log, "w", encoding="utf-8") as handle:
        completed = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(settings.server_dir / "pom.xml"), "package", "-DskipTests"],
            stdout=handle, stderr=subprocess.STDOUT, check=False,
        )
    if completed.returncode != 0 or not jar_path(settings).exists():
        message = t("server.build_failed", code=completed.returncode, log=build_log) + _log_tail(build_log)
        raise SoncoError(message, ExitCode.SERVER_BUILD_FAILED)
    return jar_path(settings)


def _running_pid(settings: Settings) -> int | None:
    pid_file = _pid_file(settings)
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def _metadata_ok(url: str) -> bool:
    try:
        return requests.get(f"{url}/metadata", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_server(settings: Settings) -> str:
    url = settings.fhir_url
    pid = _running_pid(settings)
    if pid is not None and _metadata_ok(url):
        return t("server.already", url=url, pid=pid)
    if pid is None and _port_in_use(settings.server_port):
        raise SoncoError(t("server.port_busy", port=settings.server_port), ExitCode.SERVER_BUILD_FAILED)

    jar = build(settings)
    server_log = log_file(settings)
    server_log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        "java", *JAVA_OPTIONS, "-jar", str(jar),
        f"--server.port={settings.server_port}",
        f"--sonco.data-dir={settings.data_dir / 'server'}",
        f"--sonco.profiles-dir={settings.profiles_dir}",
    ]
    if pid is None:
        with open(server_log, "a", encoding="utf-8") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        pid = process.pid
        _pid_file(settings).write_text(str(pid))
    else:
        process = None
    _notify(t("server.starting", url=url, log=server_log))

    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_SECONDS:
        if process is not None and process.poll() is not None:
            _pid_file(settings).unlink(missing_ok=True)
            message = t("server.exited", code=process.returncode, log=server_log) + _log_tail(server_log)
            raise SoncoError(message, ExitCode.SERVER_BUILD_FAILED)
        if _metadata_ok(url):
            return t("server.started", url=url, seconds=round(time.monotonic() - started), pid=pid)
        time.sleep(1)
    if process is not None:
        process.terminate()  # do not leave a half-started server holding the port and the database
        _pid_file(settings).unlink(missing_ok=True)
    message = t("server.start_failed", seconds=START_TIMEOUT_SECONDS, log=server_log) + _log_tail(server_log)
    raise SoncoError(message, ExitCode.SERVER_BUILD_FAILED)


def stop_server(settings: Settings) -> str:
    pid = _running_pid(settings)
    if pid is None:
        return t("server.not_running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _exited(pid):
            break
        time.sleep(0.5)
    else:
        log.warning("HAPI FHIR server pid %s did not stop within %s s; sending SIGKILL", pid, STOP_TIMEOUT_SECONDS)
        os.kill(pid, signal.SIGKILL)
    _pid_file(settings).unlink(missing_ok=True)
    return t("server.stopped")


def server_status(settings: Settings) -> tuple[bool, str]:
    pid = _running_pid(settings)
    if pid is None or not _metadata_ok(settings.fhir_url):
        return False, t("server.not_running")
    return True, t("server.running", url=settings.fhir_url, pid=pid, log=log_file(settings))
