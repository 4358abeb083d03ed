"""The shipped systemd units and environment file: valid, complete, and what the app accepts.

``systemd-analyze verify`` checks the units as systemd would load them (it is
skipped where systemd is not installed: it is a check of files, no service);
the environment file is read the way systemd reads it and handed to the
app's own settings loader, and must name every setting the app reads.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from project.settings import _VARIABLES, load_settings
from tests.deploy.nginx import ROOT

SYSTEMD = ROOT / "deploy" / "systemd"
ENV_FILE = ROOT / "deploy" / "flaskmono.env.example"
UNITS = ["flaskmono.service", "flaskmono-transfer.service", "flaskmono-cleanup.service"]
GUNICORN_CONF = (ROOT / "gunicorn.conf.py").read_text()
GUNICORN_SETTINGS = set(re.findall(r'"(GUNICORN_[A-Z_]+)"', GUNICORN_CONF))


def environment(text: str, *, commented: bool = False) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= reads them (quotes stripped).

    With *commented*, also the ``#KEY=value`` lines: the defaults the file shows.
    """
    pattern = r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$"
    values = {}
    for hashed, key, value in re.findall(pattern, text, re.M):
        if hashed and not commented:
            continue
        values[key] = value[1:-1] if value[:1] == value[-1:] == '"' and len(value) > 1 else value
    return values


def test_the_environment_file_names_every_setting() -> None:
    named = environment(ENV_FILE.read_text(), commented=True)
    missing = (set(_VARIABLES) | GUNICORN_SETTINGS | {"APP_ENV"}) - set(named)
    assert not missing, f"{ENV_FILE.name} does not mention {sorted(missing)}"


def test_the_app_starts_on_the_environment_file(tmp_path: Path) -> None:
    """Its values (set and shown) parse: a production app would start on it as it is."""
    values = environment(ENV_FILE.read_text(), commented=True)
    values = {k: v for k, v in values.items() if not k.startswith(("GUNICORN_", "FRAMES_"))}
    config = load_settings(environ=values, instance_path=tmp_path)
    assert config["APP_ENV"] == "production"
    assert config["TRUSTED_PROXIES"] == 1
    assert config["TRANSFER_ACCEL_REDIRECT"] == "/_transfer/"
    assert config["LOGIN_LIMIT_ADDRESS"] == "20 per minute; 100 per hour"


def test_the_units_share_one_environment_file_and_restart_on_failure() -> None:
    for name in UNITS:
        unit = (SYSTEMD / name).read_text()
        assert "EnvironmentFile=/etc/flaskmono/flaskmono.env\n" in unit, name
        assert "User=flaskmono\n" in unit, name
        if "Type=oneshot" not in unit:
            assert "Restart=on-failure\n" in unit, name
    web = (SYSTEMD / "flaskmono.service").read_text()
    assert "ExecReload=/bin/kill -s HUP $MAINPID\n" in web
    assert "Unit=" not in (SYSTEMD / "flaskmono-cleanup.timer").read_text()  # same name


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package 'systemd')")
    # The units as installed on this checkout: the paths they name must exist to verify.
    for unit in [*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")]:
        text = unit.read_text().replace("/srv/flaskmono", str(ROOT))
        text = text.replace("/etc/flaskmono/flaskmono.env", str(ENV_FILE))
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        check=False,
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        # Units this machine does not have (databases named in After=) are not ours to check.
        if line.strip() and "mariadb.service" not in line and "redis-server.service" not in line
    ]
    assert result.returncode == 0 and not problems, result.stderr
