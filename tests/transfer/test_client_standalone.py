"""The transfer client without the server: no Flask, no database driver, no app settings.

``flaskmono-transfer`` runs on a laptop where only the client's part of the
package is usable. These tests run it in a subprocess where Flask and every
other server-side package cannot be imported, against a real TCP server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from apps.transfer.client.errors import EXIT_CODES
from tests.transfer.conftest import ROOT, Owner, cli, cli_env, files_of, random_file, sha256_of
from tests.transfer.test_tcp import running

#: What the client must never import: put first on sys.path as sitecustomize.py.
BLOCKER = '''
import sys

SERVER_SIDE = {"flask", "werkzeug", "click", "redis", "pymysql", "dbutils", "cryptography"}
SERVER_SIDE.add("project")


class Blocker:
    """Refuses the server's packages, as on a machine where they are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in SERVER_SIDE:
            raise ImportError(f"{name} is blocked: the transfer client must not need it")
        return None


sys.meta_path.insert(0, Blocker())
'''


@pytest.fixture
def no_server_packages(tmp_path: Path) -> Path:
    """A PYTHONPATH entry whose sitecustomize makes Flask and co. unimportable."""
    directory = tmp_path / "blocked"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(BLOCKER)
    return directory


def standalone(
    command: list[str], tmp_path: Path, key: str, blocked: Path
) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path, key)
    env["PYTHONPATH"] = str(blocked)
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def console_script() -> str:
    """The installed ``flaskmono-transfer``, next to this interpreter."""
    found = shutil.which("flaskmono-transfer", path=str(Path(sys.executable).parent))
    assert found, "flaskmono-transfer is not installed: pip install -e ."
    return found


def stored_sha256(app: Flask, file_id: str) -> str:
    return sha256_of(Path(app.config["MEDIA_ROOT"]) / "transfer" / "files" / file_id[:2] / file_id)


def test_the_blocker_blocks(tmp_path: Path, no_server_packages: Path) -> None:
    run = standalone([sys.executable, "-c", "import flask"], tmp_path, "", no_server_packages)
    assert run.returncode == 1 and "flask is blocked" in run.stderr


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # stack-independent
def test_the_client_pushes_and_pulls_with_no_flask_importable(
    app: Flask, owner: Owner, tmp_path: Path, no_server_packages: Path
) -> None:
    source = tmp_path / "laptop.bin"
    digest = random_file(source, 3 * 1024 * 1024 + 7)
    client = [sys.executable, "-m", "apps.transfer.client"]
    with running(app) as server:
        address = f"--server=127.0.0.1:{server.port}"
        pushed = standalone(
            [*client, "push", str(source), address], tmp_path, owner.key, no_server_packages
        )
        assert pushed.returncode == 0, pushed.stderr
        file_id = pushed.stdout.strip()
        assert "sha256 " + digest + " verified" in pushed.stderr
        [file] = files_of(app, owner)
        assert (file.id, file.sha256, file.complete) == (file_id, digest, True)
        assert stored_sha256(app, file_id) == digest

        target = tmp_path / "back.bin"
        pulled = standalone(
            [*client, "pull", file_id, "-o", str(target), address, "-q"],
            tmp_path,
            owner.key,
            no_server_packages,
        )
    assert (pulled.returncode, pulled.stdout.strip(), pulled.stderr) == (0, str(target), "")
    assert sha256_of(target) == digest


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # stack-independent
def test_the_console_script(
    app: Flask, owner: Owner, tmp_path: Path, no_server_packages: Path
) -> None:
    script = console_script()
    helped = standalone([script, "--help"], tmp_path, owner.key, no_server_packages)
    assert helped.returncode == 0, helped.stderr
    assert "push" in helped.stdout and "pull" in helped.stdout
    assert EXIT_CODES in helped.stdout
    push_help = standalone([script, "push", "--help"], tmp_path, owner.key, no_server_packages)
    assert "--server HOST:PORT" in push_help.stdout and "--cafile" in push_help.stdout

    source = tmp_path / "script.bin"
    digest = random_file(source, 100_000)
    with running(app) as server:
        pushed = standalone(
            [script, "push", str(source), f"--server=127.0.0.1:{server.port}"],
            tmp_path,
            owner.key,
            no_server_packages,
        )
    assert pushed.returncode == 0, pushed.stderr
    assert stored_sha256(app, pushed.stdout.strip()) == digest


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)  # stack-independent
def test_both_command_lines_share_exit_codes_and_usage_errors(
    owner: Owner, tmp_path: Path, no_server_packages: Path
) -> None:
    managed = cli(tmp_path, owner.key, "push", "--help")
    assert managed.code == 0
    for line in EXIT_CODES.splitlines()[1:]:  # click rewraps nothing after its \b
        assert line in managed.out
    script = console_script()
    for args in (["push", str(tmp_path / "nope")], ["pull", "x", "--server", "nowhere"]):
        run = standalone([script, *args], tmp_path, owner.key, no_server_packages)
        assert run.returncode == cli(tmp_path, owner.key, *args).code == 2
    no_key = standalone([script, "pull", "0" * 32], tmp_path, "", no_server_packages)
    assert no_key.returncode == 2 and "TRANSFER_API_KEY" in no_key.stderr
