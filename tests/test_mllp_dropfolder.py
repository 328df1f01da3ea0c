"""Watched drop folder: complete files only, durable store first, then done/ or failed/."""

import subprocess
import sys
import time

import pytest

from sonco_fhir.config import load_settings
from sonco_fhir.connectors.dropfolder import DropFolder
from sonco_fhir.connectors.mllp import MessageTypes
from sonco_fhir.connectors.store import MessageStore, store_path

from conftest import CASES, REPOSITORY
from test_mllp import minimal_message, sample_message, store  # noqa: F401 (store is a fixture)

ANS_DISCHARGE = CASES / "hl7v2-ansforge-pamfr-cisis" / "SGL_sortie_ADT_A03.er7"


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "drop"
    path.mkdir()
    return path


def watcher(folder, store, settle_seconds: float = 0.0) -> DropFolder:
    return DropFolder(folder, store, settle_seconds=settle_seconds,
                      message_types=MessageTypes.from_folder(REPOSITORY / "mappings" / "hl7v2"))


def test_file_with_several_messages_stored_and_done(folder, store):
    # LF separators and a byte-order mark, as files from Windows tools often have.
    content = "\ufeff" + "\n".join([minimal_message("F-1"), minimal_message("F-2")]).replace("\r", "\n")
    (folder / "batch.hl7").write_text(content, encoding="utf-8")
    drop = watcher(folder, store)

    assert drop.scan() == 1

    assert [row.control_id for row in store.pending()] == ["F-1", "F-2"]
    assert not (folder / "batch.hl7").exists()
    assert (folder / "done" / "batch.hl7").read_text(encoding="utf-8") == content
    assert (drop.counts.files_done, drop.counts.stored) == (1, 2)


def test_real_sample_file_stored(folder, store):
    (folder / ANS_DISCHARGE.name).write_bytes(ANS_DISCHARGE.read_bytes())

    watcher(folder, store).scan()

    rows = store.pending()
    assert len(rows) == 1
    assert rows[0].sending_application == "GAM"
    assert rows[0].message.startswith("MSH|^~\\&|GAM|CHU-X|")
    assert (folder / "done" / ANS_DISCHARGE.name).exists()


def test_dropped_again_not_duplicated(folder, store):
    drop = watcher(folder, store)
    (folder / "a.hl7").write_text(sample_message(), encoding="utf-8")
    drop.scan()
    (folder / "a.hl7").write_text(sample_message(), encoding="utf-8")
    drop.scan()

    assert store.count() == 1
    done = sorted(path.name for path in (folder / "done").iterdir())
    assert len(done) == 2
    assert "a.hl7" in done
    renamed = [name for name in done if name != "a.hl7"][0]
    # The second copy gets a UTC time stamp: a.YYYYMMDDTHHMMSSffffffZ.hl7.
    assert renamed.startswith("a.2")
    assert renamed.endswith("Z.hl7")
    assert drop.counts.duplicates == 1


def test_rejected_message_moves_file_to_failed(folder, store):
    bad_version = minimal_message("BAD-1").replace("|P|2.5", "|P|9.9")
    (folder / "mixed.hl7").write_text("\r".join([minimal_message("OK-1"), bad_version]), encoding="utf-8")

    watcher(folder, store).scan()

    assert [row.control_id for row in store.pending()] == ["OK-1"]
    assert (folder / "failed" / "mixed.hl7").exists()
    errors = (folder / "failed" / "mixed.hl7.errors.txt").read_text(encoding="utf-8")
    assert errors.startswith("message 2 (ligne 4)")
    assert "MSH^1^12" in errors
    assert "9.9" in errors


def test_partial_names_and_unsettled_files_wait(folder, store):
    drop = watcher(folder, store, settle_seconds=0.5)
    (folder / "incoming.hl7.tmp").write_text(minimal_message("TMP-1"), encoding="utf-8")
    (folder / ".hidden.hl7").write_text(minimal_message("HID-1"), encoding="utf-8")
    growing = folder / "growing.hl7"
    growing.write_text(minimal_message("GROW-1")[:40], encoding="utf-8")

    assert drop.scan() == 0
    # Still being written: the size changes between scans, so it is not read.
    growing.write_text(minimal_message("GROW-1"), encoding="utf-8")
    assert drop.scan() == 0
    assert store.count() == 0

    # The sender renames its temporary file once complete.
    (folder / "incoming.hl7.tmp").rename(folder / "incoming.hl7")
    time.sleep(0.6)
    # growing.hl7 has been stable for 0.6 s, while incoming.hl7 is seen for the first time.
    assert drop.scan() == 1
    assert [row.control_id for row in store.pending()] == ["GROW-1"]
    time.sleep(0.6)
    assert drop.scan() == 1

    assert sorted(row.control_id for row in store.pending()) == ["GROW-1", "TMP-1"]
    assert (folder / ".hidden.hl7").exists()
    assert sorted(path.name for path in (folder / "done").iterdir()) == ["growing.hl7", "incoming.hl7"]


def test_listen_folder_command(folder, tmp_path):
    log_path = tmp_path / "folder.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sonco_fhir.cli.main", "--lang", "en", "listen", "folder", str(folder),
             "--no-load", "--settle-seconds", "0.2", "--interval", "0.1"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPOSITORY,
        )
    try:
        (folder / "x.hl7.tmp").write_text(minimal_message("CLI-1"), encoding="utf-8")
        (folder / "x.hl7.tmp").rename(folder / "x.hl7")
        deadline = time.monotonic() + 30
        while not (folder / "done" / "x.hl7").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.terminate()
        return_code = process.wait(timeout=30)

    output = log_path.read_text()
    assert (folder / "done" / "x.hl7").exists(), output
    assert return_code == 0, output
    assert "drop folder file x.hl7 (1 message(s)): 1 stored" in output
    assert "Drop folder no longer watched." in output
    with MessageStore(store_path(load_settings().data_dir)) as observer:
        assert [row.control_id for row in observer.pending()] == ["CLI-1"]
