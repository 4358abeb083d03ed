"""What the transfer tests share: a user with an API key, the app served over HTTP, a TLS
certificate, and the command line run as a user runs it."""

from __future__ import annotations

import datetime
import hashlib
import io
import ipaddress
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from apps.accounts import apikeys
from apps.transfer import models, storage
from apps.transfer.tcp import TransferServer
from tests.conftest import create_account, serve_in_thread


@dataclass(frozen=True)
class Owner:
    user_id: int
    username: str
    key: str  # the whole API key, fmk_<id>_<secret>

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_owner(app: Flask, username: str) -> Owner:
    with app.app_context():
        user_id = create_account(username)
        _, key = apikeys.create_key(user_id, "tests")
    return Owner(user_id, username, key)


@pytest.fixture
def owner(app: Flask) -> Owner:
    return make_owner(app, "alice")


@pytest.fixture
def other(app: Flask) -> Owner:
    return make_owner(app, "mallory")


def random_file(path: Path, size: int) -> str:
    """Write *size* random bytes to *path*; returns their SHA-256 (hex)."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def media(app: Flask) -> Iterator[Path]:
    """The app's transfer storage root, so tests can look at what is on disk."""
    yield Path(app.config["MEDIA_ROOT"]) / "transfer"


def app_and_owner(make_app: Any, **settings: Any) -> tuple[Flask, Owner]:
    """An app with extra settings, and alice with a key on it."""
    app = make_app(**settings)
    return app, make_owner(app, "alice")


def files_of(app: Flask, user: Owner | int) -> list[models.TransferFile]:
    """A user's files and unfinished uploads, newest first."""
    with app.app_context():
        return models.list_for(user if isinstance(user, int) else user.user_id)


OwnerFactory = Callable[..., tuple[Flask, str, Owner]]


@pytest.fixture
def owner_factory(make_app: Any) -> Iterator[OwnerFactory]:
    """An app with extra settings, served over HTTP, and a user with a key on it."""
    from werkzeug.serving import make_server

    servers = []

    def factory(**settings: Any) -> tuple[Flask, str, Owner]:
        app = make_app(**settings)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        serve_in_thread(server)
        servers.append(server)
        return app, f"http://127.0.0.1:{server.server_port}", make_owner(app, "alice")

    yield factory
    for server in servers:
        server.shutdown()
        server.server_close()


def store_file(app: Flask, owner: Owner, name: str, data: bytes, **fields: Any) -> str:
    """A finished file of *data*, put in place through the storage layer; returns its id."""
    with app.app_context():
        upload = storage.start_upload(owner.user_id, filename=name, size=len(data), **fields)
        stream = io.BytesIO(data)
        done = storage.receive(upload, 0, stream.readinto)
        assert done.complete
        return done.id


# -- TLS -------------------------------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class Tls:
    app: Flask  # its transfer server speaks TLS with *cert*
    owner: Owner
    cert: Path


@pytest.fixture
def tls(make_app: Any, tmp_path: Path) -> Tls:
    """An app whose TCP transfer server has a self-signed certificate, and alice on it."""
    cert, key = self_signed_certificate(tmp_path)
    app, owner = app_and_owner(make_app, TRANSFER_TLS_CERT=str(cert), TRANSFER_TLS_KEY=str(key))
    return Tls(app, owner, cert)


# -- the command line, as a user runs it -----------------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"(?P<verb>pushed|pulled) (?P<name>.+) \((?P<size>[\d.]+ \w+)\) in (?P<seconds>[\d.]+) s:"
    r" (?P<moved>[\d.]+ \w+) moved at (?P<rate>[\d.]+) MB/s average(?:, resumed at byte"
    r" (?P<resumed>\d+))?; sha256 (?P<sha256>[0-9a-f]{64}) verified"
)


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def summary(self) -> re.Match[str]:
        match = SUMMARY.search(self.err)
        assert match, self.err
        return match


def cli_env(tmp_path: Path, key: str | None) -> dict[str, str]:
    """A user's environment: the key in TRANSFER_API_KEY, nothing of the server's settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APP_ENV", "DATABASE_URL", "REDIS_URL", "TRANSFER_", "SECRET_KEY"))
    }
    env.update(
        APP_ENV="test",
        DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    if key is not None:
        env["TRANSFER_API_KEY"] = key
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "manage.py", "transfer", *args]


def cli(tmp_path: Path, key: str | None, *args: str, timeout: float = 120) -> Run:
    proc = subprocess.run(
        command(*args),
        cwd=ROOT,
        env=cli_env(tmp_path, key),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def start_cli(tmp_path: Path, key: str | None, *args: str, capture: bool = False) -> Popen[str]:
    """``manage.py transfer ARGS`` in the background; its output kept (as text) or dropped."""
    stream = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        command(*args),
        cwd=ROOT,
        env=cli_env(tmp_path, key),
        stdout=stream,
        stderr=stream,
        text=True,
    )


def pull_into(tmp_path: Path, owner: Owner, file_id: str, target: Path, *args: str) -> Run:
    """``transfer pull FILE_ID -o TARGET ARGS`` as *owner*."""
    return cli(tmp_path, owner.key, "pull", file_id, "-o", str(target), *args)


def push_quietly(
    tmp_path: Path, owner: Owner, port: int, name: str, size: int
) -> tuple[Path, str, str]:
    """A random file pushed with the CLI: (its path, its SHA-256, the file id)."""
    source = tmp_path / name
    digest = random_file(source, size)
    file_id = cli(tmp_path, owner.key, "push", str(source), at(port), "-q").out.strip()
    return source, digest, file_id


def at(server: TransferServer | int) -> str:
    port = server if isinstance(server, int) else server.port
    return f"--server=127.0.0.1:{port}"
