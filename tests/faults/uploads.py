"""Large uploads in flight during a fault: a tus upload (tuspy) and a TCP push (the CLI).

:class:`TusUpload` uploads a file in chunks with tuspy, paced so the upload
spans the fault, declaring the whole file's SHA-256 in ``Upload-Metadata``. A
chunk that fails (an HTTP error or a dropped connection) is retried as a tus
client should: wait (``Retry-After`` when given), ask the server where it stands
(``HEAD``: ``Upload-Offset``), and go on from there. Every status is recorded.

:class:`TcpPush` runs the transfer CLI (``python -m apps.transfer.client push``)
against the TCP fast path through a :class:`~tests.faults.services.SlowLink`; the
CLI resumes by itself (``--retries``); its exit code, stdout (the file id) and
stderr (retry notes, the summary) are kept.

:func:`download_sha256` fetches a finished file back over HTTP and hashes it, so
"complete with the right SHA-256" is checked on the bytes the server serves.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from tests.faults.services import ROOT

CHUNK = 4 << 20


@dataclass(frozen=True)
class Attempt:
    at: float
    method: str
    status: int | None  # None: no HTTP answer
    retry_after: str | None = None
    error: str | None = None


class TusUpload(threading.Thread):
    """Upload *path* to ``base/api/transfer/uploads`` with *key*, one chunk per *pace* seconds."""

    def __init__(self, base: str, key: str, path: Path, sha256: str, pace: float = 0.25) -> None:
        super().__init__(name="tus-upload", daemon=True)
        self.base, self.path, self.sha256, self.pace = base, path, sha256, pace
        self.headers = {"Authorization": f"Bearer {key}"}
        self.attempts: list[Attempt] = []
        self.retries = 0
        self.url: str | None = None
        self.done = threading.Event()
        self.finished_at: float | None = None
        self.failure: BaseException | None = None

    @property
    def file_id(self) -> str | None:
        return self.url.rsplit("/", 1)[1] if self.url else None

    def run(self) -> None:
        try:
            self._upload()
        except BaseException as exc:
            self.failure = exc
        finally:
            self.done.set()

    def _upload(self) -> None:
        with open(self.path, "rb") as stream:  # tuspy opens (and leaks) a file per chunk otherwise
            self._send(stream)

    def _send(self, stream: BinaryIO) -> None:
        tus = tus_client.TusClient(self.base + "/api/transfer/uploads", headers=self.headers)
        uploader = tus.uploader(
            file_stream=stream,
            chunk_size=CHUNK,
            upload_checksum=True,
            metadata={"filename": self.path.name, "sha256": self.sha256},
        )
        uploader.set_url(uploader.create_url())  # the suite starts it while all is well
        self.url = uploader.url
        self.attempts.append(Attempt(time.monotonic(), "POST", 201))
        size = uploader.get_file_size()
        while uploader.offset < size:
            try:
                uploader.upload_chunk()
            except TusCommunicationError as exc:
                request = uploader.request
                headers = request.response_headers if request is not None else {}
                self.attempts.append(
                    Attempt(
                        time.monotonic(),
                        "PATCH",
                        exc.status_code,
                        headers.get("retry-after"),
                        None if exc.status_code else str(exc),
                    )
                )
                self.retries += 1
                self._wait(headers.get("retry-after"))
                uploader.offset = self._offset()
                continue
            self.attempts.append(Attempt(time.monotonic(), "PATCH", uploader.request.status_code))
            time.sleep(self.pace)
        self.finished_at = time.monotonic()

    def _offset(self) -> int:
        """Where the server stands (HEAD), asked until it answers."""
        while True:
            try:
                response = requests.head(
                    self.url or "", headers=self.headers | {"Tus-Resumable": "1.0.0"}, timeout=10
                )
            except requests.RequestException as exc:
                self.attempts.append(
                    Attempt(time.monotonic(), "HEAD", None, error=type(exc).__name__)
                )
                time.sleep(0.5)
                continue
            retry_after = response.headers.get("Retry-After")
            self.attempts.append(
                Attempt(time.monotonic(), "HEAD", response.status_code, retry_after)
            )
            if response.status_code == 200 and "Upload-Offset" in response.headers:
                return int(response.headers["Upload-Offset"])
            self._wait(retry_after)

    @staticmethod
    def _wait(retry_after: str | None) -> None:
        try:
            time.sleep(min(float(retry_after), 10) if retry_after else 0.5)
        except ValueError:
            time.sleep(0.5)

    def statuses(self) -> list[int | None]:
        return [a.status for a in self.attempts]


class TcpPush:
    """``python -m apps.transfer.client push FILE --server 127.0.0.1:PORT`` in the background."""

    def __init__(self, path: Path, key: str, port: int, workdir: Path) -> None:
        self.path = path
        self.stdout = workdir / f"{path.name}.out"
        self.stderr = workdir / f"{path.name}.err"
        env = {"TRANSFER_API_KEY": key, "PATH": "/usr/bin:/bin",
               "XDG_CACHE_HOME": str(workdir / "cache"), "HOME": str(workdir)}  # fmt: skip
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apps.transfer.client", "push", str(path),
                 f"--server=127.0.0.1:{port}", "--retries", "10", "--timeout", "15"],
                cwd=ROOT, env=env, stdout=out, stderr=err,
            )  # fmt: skip
        self.started = time.monotonic()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    @property
    def file_id(self) -> str:
        return self.stdout.read_text().strip()

    @property
    def log(self) -> str:
        """The CLI's stderr without the progress bar's redraws."""
        text = self.stderr.read_text(errors="replace")
        return "\n".join(line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip())

    def retry_notes(self) -> list[str]:
        return [line for line in self.log.splitlines() if "retrying in" in line]


def download_sha256(base: str, key: str, file_id: str) -> tuple[int, str]:
    """(status, SHA-256 of the body) of the owner's download of *file_id*."""
    digest = hashlib.sha256()
    with requests.get(
        f"{base}/transfer/files/{file_id}/download",
        headers={"Authorization": f"Bearer {key}"},
        stream=True,
        timeout=60,
    ) as response:
        for block in response.iter_content(1 << 20):
            digest.update(block)
        return response.status_code, digest.hexdigest()
