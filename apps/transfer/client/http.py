"""HTTP, client side: tus 1.0 uploads for a push, Range downloads for a pull."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

from apps.transfer import tusmeta
from apps.transfer.client.errors import ClientError, ExitCode, Retry, reason, untrusted
from apps.transfer.client.files import LocalFile, PartFile, ResumeCache
from apps.transfer.client.progress import Progress, note
from apps.transfer.client.transport import Options, Remote, parse_key, tls_context
from apps.transfer.tusmeta import TUS_VERSION
from apps.transfer.wire import SHA256_HEX

TUS_CHUNK = 8 << 20  # bytes per tus PATCH, each with its own Upload-Checksum


class HttpTransport:
    """The web server's own endpoints: ``/api/transfer/uploads`` (tus 1.0) and downloads."""

    hashes_while_sending = False  # tus finds an upload to resume by the file's SHA-256

    def __init__(self, options: Options) -> None:
        assert options.http is not None
        parts = urlsplit(options.http)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ClientError(
                f"--http needs an http:// or https:// URL, not {options.http!r}", ExitCode.USAGE
            )
        self.key_id = parse_key(options.key)[0]
        self.options = options
        self.base = options.http.rstrip("/")
        self.prefix = parts.path.rstrip("/")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.cache = ResumeCache()
        self._conn: http.client.HTTPConnection | None = None

    # -- plumbing --

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(
                    self.host,
                    self.port,
                    timeout=self.options.timeout,
                    context=tls_context(self.options),
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.options.timeout
                )
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.options.key.strip()}", **extra}

    @contextlib.contextmanager
    def _exchange(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Iterator[http.client.HTTPResponse]:
        """One request and its response; network failures become :class:`Retry`."""
        conn = self._connection()
        try:
            conn.request(method, self.prefix + path, body=body, headers=dict(headers))
            response = conn.getresponse()
            yield response
            response.read()  # the rest, so the connection can take the next request
        except ssl.SSLCertVerificationError as exc:
            self._drop()
            raise untrusted(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise Retry(f"connection to {self.host} lost: {reason(exc)}") from exc
        except BaseException:
            self._drop()  # a response left half read cannot carry the next request
            raise

    def _fail(self, response: http.client.HTTPResponse, what: str) -> ClientError | Retry:
        """The error for an unexpected status (the caller raises it)."""
        try:
            message = json.loads(response.read() or b"{}").get("message", "")
        except ValueError:
            message = ""
        detail = f"{what}: HTTP {response.status} {response.reason}" + (
            f": {message}" if message else ""
        )
        status = response.status
        if status in {401, 403} or 300 <= status < 400:
            return ClientError(f"{detail} (is the key right?)", ExitCode.AUTH)
        if status == 404:
            return ClientError(detail, ExitCode.NOT_FOUND)
        if status in {413, 507}:
            return ClientError(detail, ExitCode.REFUSED)
        if status in {409, 410, 423, 429} or status >= 500:
            return Retry(detail)
        return ClientError(detail)

    # -- push --

    def push(self, local: LocalFile, progress: Progress) -> tuple[str, str]:
        key = self.cache.key(self.base, self.key_id, local)
        url = self.cache.get(key)
        offset = self._offset(url) if url else None
        if url is None or offset is None:
            url, offset = self._create(local), 0
            self.cache.put(key, url)
        progress.start(offset)
        with open(local.path, "rb") as f:
            while offset < local.size:  # (an empty file is complete once created)
                offset = self._patch(url, f, offset, local, progress)
        self.cache.forget(key)
        file_id = url.rstrip("/").rsplit("/", 1)[-1]
        return file_id, self.stat(file_id).sha256

    def _create(self, local: LocalFile) -> str:
        assert local.sha256 is not None, "push() measures the file for this transport"
        metadata = tusmeta.encode({"filename": local.name, "sha256": local.sha256})
        headers = self._headers(
            **{
                "Tus-Resumable": TUS_VERSION,
                "Upload-Length": str(local.size),
                "Upload-Metadata": metadata,
                "Content-Length": "0",
            }
        )
        with self._exchange("POST", "/api/transfer/uploads", headers) as response:
            if response.status != 201:
                raise self._fail(response, "creating the upload")
            location = response.getheader("Location", "")
        return urlsplit(location).path.removeprefix(self.prefix)

    def _offset(self, url: str) -> int | None:
        """Where an upload stands (HEAD), or None if it is gone or expired."""
        headers = self._headers(**{"Tus-Resumable": TUS_VERSION})
        with self._exchange("HEAD", url, headers) as response:
            if response.status in {404, 410}:
                return None
            if response.status != 200:
                raise self._fail(response, "asking where the upload stands")
            return int(response.getheader("Upload-Offset", "0"))

    def _patch(
        self, url: str, f: BinaryIO, offset: int, local: LocalFile, progress: Progress
    ) -> int:
        """Send one chunk; returns the new offset."""
        chunk = os.pread(f.fileno(), min(TUS_CHUNK, local.size - offset), offset)
        if len(chunk) < min(TUS_CHUNK, local.size - offset):
            raise Retry(f"{local.path} got shorter while it was being sent")
        checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
        headers = self._headers(
            **{
                "Tus-Resumable": TUS_VERSION,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                "Upload-Checksum": f"sha256 {checksum}",
            }
        )
        with self._exchange("PATCH", url, headers, chunk) as response:
            if response.status == 204:
                progress.advance(len(chunk))
                return int(response.getheader("Upload-Offset", str(offset + len(chunk))))
            if response.status == 409:  # we were behind or ahead: the server's offset wins
                moved_to = int(response.getheader("Upload-Offset", "0"))
                progress.start(moved_to)
                return moved_to
            if response.status == 460:
                raise self._checksum_failure(url, local)
            raise self._fail(response, f"sending bytes {offset}-{offset + len(chunk) - 1}")

    def _checksum_failure(self, url: str, local: LocalFile) -> ClientError | Retry:
        """A 460: a chunk garbled on the way (retry it), or the whole file is wrong."""
        if self._offset(url) is not None:
            return Retry("a chunk arrived garbled and was discarded")
        if local.changed():
            return Retry(f"{local.path} changed while it was being sent")
        return ClientError(
            "the server received bytes whose SHA-256 is not the file's; it kept nothing",
            ExitCode.CHECKSUM,
            "checksum_mismatch",
        )

    # -- pull --

    def _download_path(self, file_id: str) -> str:
        return f"/transfer/files/{quote(file_id)}/download"

    def stat(self, file_id: str) -> Remote:
        with self._exchange("HEAD", self._download_path(file_id), self._headers()) as response:
            if response.status != 200:
                raise self._fail(response, f"looking up {file_id}")
            etag = (response.getheader("ETag") or "").strip('"')
            if not SHA256_HEX.match(etag):
                raise ClientError(f"the server gave no SHA-256 for {file_id} (ETag {etag!r})")
            return Remote(
                file_id,
                _disposition_name(response.getheader("Content-Disposition", "")) or file_id,
                int(response.getheader("Content-Length", "0")),
                etag,
            )

    def pull(self, remote: Remote, part: PartFile, progress: Progress) -> None:
        headers = self._headers(
            Range=f"bytes={part.position}-", **{"If-Range": f'"{remote.sha256}"'}
        )
        with self._exchange("GET", self._download_path(remote.file_id), headers) as response:
            if response.status == 200 and part.position:
                note("the server sent the whole file, not the rest: starting again")
                part.restart()
                progress.start(0)
            elif response.status != 206 and not (response.status == 200 and not part.position):
                raise self._fail(response, f"downloading {remote.file_id}")
            part.receive(response.readinto, progress)


def _disposition_name(header: str) -> str | None:
    """The exact name from ``filename*=UTF-8''...`` (or the plain ``filename``)."""
    match = re.search(r"filename\*=UTF-8''([^;\s]+)", header, re.IGNORECASE)
    if match:
        return unquote(match.group(1))
    match = re.search(r'filename="([^"]*)"', header)
    return match.group(1) if match else None
