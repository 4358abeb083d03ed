"""The storage layer: an upload becomes a file only whole and verified, whatever happens between.

These drive :mod:`apps.transfer.storage` directly, as the tus server and the TCP
server do, to reach states a client cannot make on purpose: another worker
taking the next chunk, a write torn by a crash, a crash between the rename and
the database update.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from apps.transfer import models, storage
from apps.transfer.names import ascii_filename, clean_filename, content_disposition
from project.db import utcnow
from project.extensions import db
from tests.transfer.conftest import Owner

DATA = os.urandom(3 * 1024 * 1024 + 5)


def reader(data: bytes):  # type: ignore[no-untyped-def]
    return io.BytesIO(data).readinto


def test_chunks_taken_by_different_workers_hash_to_the_right_file(app: Flask, owner: Owner) -> None:
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="a.bin", size=len(DATA))
        cuts = [0, 1, 1024 * 1024, 2 * 1024 * 1024 + 7, len(DATA)]
        for start, stop in zip(cuts, cuts[1:], strict=False):
            storage._hashes.forget(upload.id)  # the next chunk lands on another worker
            upload = storage.receive(upload, start, reader(DATA[start:stop]))
        assert upload.complete
        assert upload.sha256 == hashlib.sha256(DATA).hexdigest()


def test_bytes_torn_past_the_recorded_offset_are_cut_off(
    app: Flask, owner: Owner, media: Path
) -> None:
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="a.bin", size=8)
        upload = storage.receive(upload, 0, reader(b"abcd"))
        with open(media / "partial" / f"{upload.id}.part", "ab") as partial:
            partial.write(b"GARBAGE")  # a crash mid-write, before the row was updated
        done = storage.receive(upload, 4, reader(b"efgh"))
        assert done.sha256 == hashlib.sha256(b"abcdefgh").hexdigest()
        with storage.open_file(done) as f:
            assert f.read() == b"abcdefgh"


def test_a_crash_between_rename_and_record_is_settled(
    app: Flask, owner: Owner, media: Path
) -> None:
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="a.bin", size=4)
        partial = media / "partial" / f"{upload.id}.part"
        partial.write_bytes(b"abcd")
        models.record_progress(upload.id, 4, 3600)
        final = media / "files" / upload.id[:2] / upload.id
        final.parent.mkdir(parents=True)
        partial.rename(final)  # ...and the process died here
        stuck = models.get(upload.id)
        assert stuck is not None and not stuck.complete

        settled = storage.settle(stuck)
        assert settled.complete
        assert settled.sha256 == hashlib.sha256(b"abcd").hexdigest()


def test_a_file_is_never_visible_before_it_is_whole(app: Flask, owner: Owner, media: Path) -> None:
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="a.bin", size=len(DATA))
        upload = storage.receive(upload, 0, reader(DATA[:-1]))
        assert not upload.complete
        assert not (media / "files").exists() or not list((media / "files").rglob(upload.id))
        with pytest.raises(FileNotFoundError):
            storage.open_file(upload)


def test_cleanup_removes_expired_uploads_orphans_and_dead_links(
    app: Flask, owner: Owner, media: Path
) -> None:
    with app.app_context():
        expired = storage.start_upload(owner.user_id, filename="old.bin", size=10)
        busy = storage.start_upload(owner.user_id, filename="busy.bin", size=10)
        fresh = storage.start_upload(owner.user_id, filename="new.bin", size=10)
        kept = storage.start_upload(owner.user_id, filename="kept.bin", size=1)
        kept = storage.receive(kept, 0, reader(b"k"))
        _, token = models.create_share(kept.id, 1)
        db.execute(
            "UPDATE transfer_files SET expires_at = %s WHERE id IN (%s, %s)",
            (utcnow() - timedelta(seconds=1), expired.id, busy.id),
        )
        db.execute("UPDATE transfer_shares SET expires_at = %s", (utcnow(),))
        orphan = media / "files" / "ab" / ("ab" + "0" * 30)
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"left behind")

        with open(media / "partial" / f"{busy.id}.part", "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # a request is writing to it right now
            report = storage.cleanup()

        assert report == storage.CleanupReport(expired_uploads=1, orphan_files=1, dead_shares=1)
        assert models.get(expired.id) is None
        assert not (media / "partial" / f"{expired.id}.part").exists()
        assert models.get(busy.id) is not None  # left for the next run
        assert models.get(fresh.id) is not None
        assert not orphan.exists()
        kept_now = models.get(kept.id)
        assert kept_now is not None
        with storage.open_file(kept_now) as f:
            assert f.read() == b"k"


def test_the_cleanup_command_reports_what_it_removed(app: Flask, owner: Owner) -> None:
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="old.bin", size=10)
        db.execute(
            "UPDATE transfer_files SET expires_at = %s WHERE id = %s",
            (utcnow() - timedelta(seconds=1), upload.id),
        )
    result = app.test_cli_runner().invoke(args=["transfer", "cleanup"])
    assert result.exit_code == 0, result.output
    assert "removed 1 expired upload(s), 0 orphaned file(s)" in result.output


def test_quota_counts_unfinished_uploads_at_their_full_size(app: Flask, owner: Owner) -> None:
    app.config["TRANSFER_USER_QUOTA"] = 100
    with app.app_context():
        storage.start_upload(owner.user_id, filename="a", size=60)
        with pytest.raises(models.QuotaExceeded) as refused:
            storage.start_upload(owner.user_id, filename="b", size=41)
        assert "only 40 of your 100-byte quota are free" in str(refused.value)
        storage.start_upload(owner.user_id, filename="b", size=40)


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("文件传输.bin", "文件传输.bin"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.docx", "report.docx"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # no right-to-left override
        ("a\r\nSet-Cookie: x=1", "a Set-Cookie: x=1"),
        ("  spaced\tout  .txt", "spaced out .txt"),
        ("..", "unnamed"),
        ("", "unnamed"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFC
    ],
)
def test_clean_filename(given: str, kept: str) -> None:
    assert clean_filename(given) == kept


def test_a_long_name_is_cut_to_255_bytes_keeping_its_extension() -> None:
    name = clean_filename("名" * 200 + ".tar.gz")
    assert len(name.encode()) <= 255
    assert name.endswith(".gz") and name.startswith("名")


def test_the_ascii_fallback_is_meaningful() -> None:
    file_id = "0123456789abcdef" * 2
    assert ascii_filename("文件传输.bin", file_id) == "download-01234567.bin"
    assert ascii_filename("Résumé 2026.pdf", file_id) == "Resume 2026.pdf"
    assert ascii_filename("notes", file_id) == "notes"
    header = content_disposition('q"uote\\.txt', file_id)
    assert header.startswith(
        "attachment; filename=\"q_uote.txt\"; filename*=UTF-8''q%22uote%5C.txt"
    )


def test_files_and_folders_are_private_to_the_servers_user_and_group(
    app: Flask, owner: Owner, media: Path
) -> None:
    """Stops other local users reading uploaded files: they were created 0644 in 0755 folders;
    now 0640 and 0750 (or stricter, by the umask)."""
    import stat

    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="a.bin", size=len(DATA))
        partial = storage.get_storage().partial_path(upload.id)
        assert stat.S_IMODE(partial.stat().st_mode) & ~0o640 == 0
        done = storage.receive(upload, 0, reader(DATA))
        assert done.complete
        final = storage.get_storage().file_path(done.id)
    assert stat.S_IMODE(final.stat().st_mode) & ~0o640 == 0
    for folder in (final.parent, final.parent.parent, partial.parent, media):
        assert stat.S_IMODE(folder.stat().st_mode) & ~0o750 == 0, folder


def test_a_chunk_without_the_running_hash_at_hand_does_not_rehash_the_prefix(
    app: Flask, owner: Owner
) -> None:
    """Stops quadratic hashing: a chunk landing on a worker without the upload's running
    SHA-256 re-read and re-hashed the whole prefix (up to 50 GiB for a 1-byte PATCH). The
    whole file is now hashed once, at completion. Bytes read are counted by the kernel."""
    prefix = 256 * 1024 * 1024
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename="big.bin", size=prefix + 2)
        partial = storage.get_storage().partial_path(upload.id)
        os.truncate(partial, prefix)  # bytes another worker received (zeros, sparse)
        models.record_progress(upload.id, prefix, app.config["TRANSFER_UPLOAD_EXPIRY"])
        upload = models.get(upload.id)
        assert upload is not None
        before = bytes_read()
        upload = storage.receive(upload, prefix, reader(b"x"))  # this process has no state
        assert bytes_read() - before < 8 * 1024 * 1024
        done = storage.receive(upload, prefix + 1, reader(b"y"))
    expected = hashlib.sha256()
    block = bytes(1024 * 1024)
    for _ in range(prefix // len(block)):
        expected.update(block)
    expected.update(b"xy")
    assert done.complete and done.sha256 == expected.hexdigest()


def bytes_read() -> int:
    """Bytes this process has read through read(2) and the like (/proc/self/io, rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")
