"""A real nginx for tests, on the shipped ``deploy/nginx/flaskmono.conf``.

The server blocks are the shipped file's, with only what must differ on a
test machine replaced: the upstream (the test's gunicorn), the ports, the
paths (the checkout, MEDIA_ROOT, the certificate). Every replaced text must
be found, so a change to the shipped file that the renderer no longer
understands fails here instead of testing something else. Around them goes
the little of Debian's ``nginx.conf`` the file relies on, with every path
nginx writes (pid, logs, temp files) in the test's directory, so nginx runs
as the user running the tests, root or not.
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "nginx" / "flaskmono.conf"
NGINX = next(
    (p for p in ("/usr/sbin/nginx", shutil.which("nginx")) if p and Path(p).exists()), None
)

# What the access log records per request: how many bytes came from gunicorn
# ($upstream_bytes_received) against how many went to the client.
LOG_FORMAT = "$request_method $request_uri $status $body_bytes_sent $upstream_bytes_received"

WRAPPER = """\
user {user};
worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    log_format deploy '{log_format}';
    access_log {tmp}/access.log deploy;

{servers}
}}
"""


@dataclass(frozen=True)
class Layout:
    """Where the rendered config points: the test's stand-ins for the production paths."""

    upstream: str  # host:port of gunicorn
    http_port: int
    https_port: int
    media: Path  # MEDIA_ROOT
    cert: Path
    key: Path
    webroot: Path  # certbot's --webroot


def render(layout: Layout, text: str | None = None) -> str:
    """The shipped server blocks, pointed at the test's gunicorn, ports and paths."""
    text = SHIPPED.read_text() if text is None else text
    replacements = [
        ("server 127.0.0.1:8000;", f"server {layout.upstream};"),
        ("listen 80;", f"listen 127.0.0.1:{layout.http_port};"),
        ("listen [::]:80;", f"listen [::1]:{layout.http_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{layout.https_port} ssl http2;"),
        ("listen [::]:443 ssl http2;", f"listen [::1]:{layout.https_port} ssl http2;"),
        ("/etc/letsencrypt/live/example.com/fullchain.pem", str(layout.cert)),
        ("/etc/letsencrypt/live/example.com/privkey.pem", str(layout.key)),
        ("/var/lib/flaskmono/media/", f"{layout.media}/"),
        ("/srv/flaskmono/", f"{ROOT}/"),
        ("root /var/www/html;", f"root {layout.webroot};"),
    ]
    for old, new in replacements:
        assert old in text, f"{SHIPPED.name} no longer has {old!r}: update tests/deploy/nginx.py"
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    directory: Path
    layout: Layout

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.layout.https_port}"

    @property
    def access_log(self) -> list[list[str]]:
        """The access log so far, one list of LOG_FORMAT's fields per request."""
        path = self.directory / "access.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(nginx: str, layout: Layout, directory: Path) -> Nginx:
    """Start nginx (not as a daemon) on the rendered config; returns once it accepts."""
    directory.mkdir(parents=True, exist_ok=True)
    layout.webroot.mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(
        WRAPPER.format(
            user=getpass.getuser(), tmp=directory, log_format=LOG_FORMAT, servers=render(layout)
        )
    )
    test = subprocess.run(
        [nginx, "-t", "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert test.returncode == 0, f"nginx -t refused the rendered config:\n{test.stderr}"
    proc = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Nginx(proc, directory, layout)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited:\n{server.error_log()}"
        try:
            socket.create_connection(("127.0.0.1", layout.https_port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise AssertionError(f"nginx did not accept on {layout.https_port}:\n{server.error_log()}")
