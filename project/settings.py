"""Settings: layered config classes filled from the environment.

The classes hold the defaults for each environment; :func:`load_settings`
reads the environment variables listed in DESIGN.md on top of them and
validates everything a driver would otherwise reject later with a traceback.
Nothing is read at import time, so tests can build settings from any mapping.

Errors are :class:`ConfigurationError`, whose message is one line naming the
variable to fix; ``manage.py`` and ``gunicorn.conf.py`` print it as it is.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from project.urls import DatabaseURL, RedisURL, parse_site_url

BASE_DIR = Path(__file__).resolve().parent.parent

#: The feature apps, in the order their blueprints, commands and migrations
#: are registered. An app is switched on by listing it here.
INSTALLED_APPS: tuple[str, ...] = ("apps.accounts", "apps.realtime", "apps.transfer")

ENVIRONMENTS = ("development", "test", "production")


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


class Config:
    """Defaults shared by every environment."""

    APP_NAME = "flaskmono"
    INSTALLED_APPS = INSTALLED_APPS
    DEBUG = False
    TESTING = False

    DATABASE_URL = "sqlite:///instance/app.db"
    DB_POOL_SIZE = 20
    REDIS_URL: str | None = None
    REDIS_KEY_PREFIX = "flaskmono:"
    # Connections per process; a caller waits up to REDIS_POOL_TIMEOUT seconds for a free
    # one instead of failing (a gevent worker may run thousands of requests at once).
    REDIS_MAX_CONNECTIONS = 100
    REDIS_POOL_TIMEOUT = 10.0
    MEDIA_ROOT = "instance/media"

    # Sessions live on the server (Flask-Session); the cookie carries only a
    # random 256-bit id, unguessable without signing (Flask-Session 0.8
    # deprecates its signer). msgpack, never pickle, on every backend.
    SESSION_PERMANENT = True
    # Save a session only when it changed (a login refreshes seen_at once a minute),
    # not on every request: fewer writes, and the expiry follows real activity.
    SESSION_REFRESH_EACH_REQUEST = False
    SESSION_USE_SIGNER = False
    SESSION_ID_LENGTH = 32
    SESSION_SERIALIZATION_FORMAT = "msgpack"
    SESSION_LIFETIME_SECONDS = 14 * 24 * 3600  # "remember me", and the store's expiry
    SESSION_ABSOLUTE_SECONDS = 12 * 3600  # a login without "remember me" lasts this long...
    SESSION_IDLE_SECONDS = 2 * 3600  # ...unless idle for this long
    SESSION_MAX_PER_USER = 50  # open login sessions per user; a new login ends the oldest
    SESSION_COOKIE_NAME = "session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False

    WTF_CSRF_ENABLED = True
    WTF_CSRF_CHECK_DEFAULT = False  # checked in project.hooks.check_csrf, after auth
    WTF_CSRF_TIME_LIMIT = 3600 * 8
    WTF_CSRF_SSL_STRICT = True

    MAIL_BACKEND = "console"
    MAIL_SERVER = "localhost"
    MAIL_PORT = 25
    MAIL_USE_TLS = False
    MAIL_USERNAME = ""
    MAIL_PASSWORD = ""
    MAIL_FROM = "flaskmono <noreply@localhost>"

    # Failed logins: per account and per address, "slowed" by the short window
    # and "refused for a while" by the long one (Flask-Limiter syntax).
    LOGIN_LIMIT_ACCOUNT = "5 per minute; 20 per hour"
    LOGIN_LIMIT_ADDRESS = "20 per minute; 100 per hour"
    REGISTER_LIMIT = "10 per hour"  # new accounts per address
    RESET_LIMIT = "3 per hour"  # reset emails per address and per email
    PASSWORD_RESET_SECONDS = 3600
    # Admins must sign in with a second factor (TOTP) before any /admin/ page opens.
    ADMIN_REQUIRE_2FA = False
    # Creating an API key, changing the email or turning the second factor off asks for
    # a code again when the last one was given longer ago than this.
    TWO_FACTOR_FRESH_SECONDS = 15 * 60
    # argon2id cost (argon2-cffi's RFC 9106 "low memory" profile); raising it rehashes at login.
    ARGON2_TIME_COST = 3
    ARGON2_MEMORY_KIB = 65536
    ARGON2_PARALLELISM = 4

    # WebSockets (project/websocket). Cookies authenticate sockets, so only this site's
    # pages (and the origins listed here) may open one.
    WEBSOCKET_ALLOWED_ORIGINS: tuple[str, ...] = ()
    WEBSOCKET_COMPRESSION = False  # permessage-deflate, when a client offers it
    WEBSOCKET_MAX_MESSAGE_SIZE = 1 << 20
    WEBSOCKET_PING_INTERVAL = 20.0  # seconds of silence before we ping
    WEBSOCKET_PING_TIMEOUT = 20.0  # seconds a pong may take before the peer counts as dead
    WEBSOCKET_CLOSE_TIMEOUT = 5.0  # seconds we wait for the peer's close frame
    # Bytes waiting to be written to one socket; past it the peer is dropped (1013).
    WEBSOCKET_MAX_QUEUE = 1 << 20
    WEBSOCKET_MAX_PER_USER = 20  # open sockets per user across every worker and host
    WEBSOCKET_ECHO = True  # /ws/echo, for conformance tests; off in production
    CHAT_MESSAGE_MAX_LENGTH = 2000
    CHAT_RATE_LIMIT = "20 per 10 seconds"  # messages per user
    CHAT_HISTORY = 50  # messages sent on join, and per "load older"
    PRESENCE_TTL = 30  # seconds: a dead worker's users drop off the online list after this
    PRESENCE_INTERVAL = 1.0  # seconds: one presence frame per room per interval at most

    # Transfers (apps/transfer). Sizes in bytes; an unfinished upload expires
    # TRANSFER_UPLOAD_EXPIRY seconds after its last byte arrived.
    TRANSFER_MAX_FILE_SIZE = 50 * 1024**3
    TRANSFER_USER_QUOTA = 200 * 1024**3  # finished files and unfinished uploads together
    TRANSFER_UPLOAD_EXPIRY = 24 * 3600
    TRANSFER_SHARE_MAX_DAYS = 30
    TRANSFER_SERVER_HOST = "127.0.0.1"  # manage.py transfer-server, and the CLI's default
    TRANSFER_SERVER_PORT = 9000
    TRANSFER_SERVER_MAX_CLIENTS = 64
    TRANSFER_SERVER_TIMEOUT = 60.0  # seconds a connection may stay silent, mid-file or not
    TRANSFER_SERVER_AUTH_TIMEOUT = 10.0  # seconds from connect (TLS included) to a proven key
    TRANSFER_TLS_CERT = ""  # PEM files; both set = the TCP server speaks only TLS
    TRANSFER_TLS_KEY = ""
    # An nginx ``internal`` location (e.g. "/_transfer/") aliased to MEDIA_ROOT/transfer/: set,
    # downloads answer with X-Accel-Redirect and nginx sends the body (Range and all), so a
    # slow client holds no gunicorn thread. Empty: gunicorn sends it (sendfile).
    TRANSFER_ACCEL_REDIRECT = ""

    HSTS_SECONDS = 0
    TRUSTED_PROXIES = 0  # reverse proxies in front whose X-Forwarded-* headers are trusted
    # The public base URL: every link that leaves the site (emails) is built from it.
    SITE_URL = "http://127.0.0.1:5000"
    # Host values accepted (Flask answers any other with 400); SITE_URL's host is added.
    TRUSTED_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
    MAX_CONTENT_LENGTH = 16 * 1024 * 1024


class DevelopmentConfig(Config):
    DEBUG = True


class TestConfig(Config):
    TESTING = True
    # Cheap hashes keep hundreds of logins fast; the production cost is the default.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_KIB = 1024
    ARGON2_PARALLELISM = 1
    # Tests see the error pages users see, not the exception (it is still logged).
    PROPAGATE_EXCEPTIONS = False
    DB_POOL_SIZE = 5


class ProductionConfig(Config):
    SITE_URL = ""  # required: see load_settings
    MAIL_BACKEND = "smtp"
    WEBSOCKET_ECHO = False
    SESSION_COOKIE_SECURE = True
    ADMIN_REQUIRE_2FA = True
    HSTS_SECONDS = 365 * 24 * 3600
    PREFERRED_URL_SCHEME = "https"


CONFIG_CLASSES: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "test": TestConfig,
    "production": ProductionConfig,
}


def load_settings(
    env: str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    instance_path: Path | None = None,
) -> dict[str, Any]:
    """Build the Flask config for one environment.

    Args:
        env: ``development``, ``test`` or ``production``; default ``APP_ENV``.
        environ: where to read variables from; default ``os.environ``.
        overrides: values that win over both (tests use this).
        instance_path: where relative paths and the generated secret live.

    Raises:
        ConfigurationError: with a one-line message naming the variable.
    """
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    instance = Path(instance_path or BASE_DIR / "instance")
    env = env or environ.get("APP_ENV") or "development"
    if env not in CONFIG_CLASSES:
        raise ConfigurationError(f"APP_ENV={env!r} is not one of {', '.join(ENVIRONMENTS)}")
    cls = CONFIG_CLASSES[env]
    config = {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
    config["APP_ENV"] = env

    for name, parse in _VARIABLES.items():
        if name in environ and environ[name] != "":
            config[name] = parse(name, environ[name])
    config.update(overrides)

    config["SECRET_KEY"] = _secret_key(env, config.get("SECRET_KEY"), instance)
    config["DATABASE"] = _parse(DatabaseURL.parse, "DATABASE_URL", config["DATABASE_URL"], BASE_DIR)
    redis_url = config.get("REDIS_URL")
    config["REDIS"] = _parse(RedisURL.parse, "REDIS_URL", redis_url, None) if redis_url else None
    config["MEDIA_ROOT"] = str(_resolve(config["MEDIA_ROOT"]))
    config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=config["SESSION_LIFETIME_SECONDS"])
    config["INSTANCE_PATH"] = str(instance)
    config["TRANSFER_ACCEL_REDIRECT"] = _accel_prefix(config["TRANSFER_ACCEL_REDIRECT"])
    _site(config)
    return config


def _site(config: dict[str, Any]) -> None:
    """Check ``SITE_URL`` (required in production) and add its host to ``TRUSTED_HOSTS``."""
    if not config.get("SITE_URL"):
        raise ConfigurationError(
            "SITE_URL is not set: production needs the site's public address "
            "(e.g. https://example.com) to build the links it emails"
        )
    config["SITE_URL"] = _parse(parse_site_url, "SITE_URL", config["SITE_URL"], None)
    host = urlsplit(config["SITE_URL"]).hostname
    trusted = list(config["TRUSTED_HOSTS"])
    if host and host not in trusted:
        trusted.append(host)
    config["TRUSTED_HOSTS"] = trusted


def _accel_prefix(value: str) -> str:
    """``TRANSFER_ACCEL_REDIRECT`` as a location prefix that starts and ends with ``/``."""
    if not value:
        return ""
    if not value.startswith("/") or any(c in value for c in "?#% \t"):
        raise ConfigurationError(
            f"TRANSFER_ACCEL_REDIRECT={value!r} is not a location prefix like /_transfer/ "
            "(the nginx internal location aliased to MEDIA_ROOT/transfer/)"
        )
    return value if value.endswith("/") else value + "/"


def _parse(parser: Any, name: str, value: str, base: Path | None) -> Any:
    try:
        return parser(value, base) if base is not None else parser(value)
    except ValueError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else BASE_DIR / p


def _secret_key(env: str, configured: str | None, instance: Path) -> str:
    """Return the secret key: required in production, generated once elsewhere.

    A generated key is kept in ``instance/secret_key`` (mode 0600) so sessions
    survive a restart of the development server.
    """
    if configured:
        if env == "production" and len(configured) < 32:
            raise ConfigurationError(
                "SECRET_KEY is too short for production: use at least 32 random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return configured
    if env == "production":
        raise ConfigurationError(
            "SECRET_KEY is not set: production refuses to start without it "
            "(export SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(48))'))"
        )
    if env == "test":
        return secrets.token_urlsafe(48)
    key_file = instance / "secret_key"
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        instance.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


def _int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r} is not a whole number") from None
    if number <= 0:
        raise ConfigurationError(f"{name}={value!r} must be greater than zero")
    return number


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise ConfigurationError(f"{name}={value!r} is not a whole number (0 or more)")
    return int(value)


def _seconds(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r} is not a number of seconds") from None
    if number <= 0:
        raise ConfigurationError(f"{name}={value!r} must be greater than zero")
    return number


def _list(name: str, value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _str(name: str, value: str) -> str:
    return value


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name}={value!r} is not a boolean (use 1 or 0)")


def _choice(*allowed: str) -> Any:
    def parse(name: str, value: str) -> str:
        if value not in allowed:
            raise ConfigurationError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        return value

    return parse


#: Environment variables read on top of the config class, with their parsers.
_VARIABLES = {
    "SECRET_KEY": _str,
    "DATABASE_URL": _str,
    "DB_POOL_SIZE": _int,
    "REDIS_URL": _str,
    "REDIS_KEY_PREFIX": _str,
    "REDIS_MAX_CONNECTIONS": _int,
    "REDIS_POOL_TIMEOUT": _seconds,
    "MEDIA_ROOT": _str,
    "SESSION_LIFETIME_SECONDS": _int,
    "SESSION_ABSOLUTE_SECONDS": _int,
    "SESSION_IDLE_SECONDS": _int,
    "SESSION_MAX_PER_USER": _int,
    "MAIL_BACKEND": _choice("console", "smtp"),
    "MAIL_SERVER": _str,
    "MAIL_PORT": _int,
    "MAIL_USE_TLS": _bool,
    "MAIL_USERNAME": _str,
    "MAIL_PASSWORD": _str,
    "MAIL_FROM": _str,
    "LOGIN_LIMIT_ACCOUNT": _str,
    "LOGIN_LIMIT_ADDRESS": _str,
    "PASSWORD_RESET_SECONDS": _int,
    "ADMIN_REQUIRE_2FA": _bool,
    "TWO_FACTOR_FRESH_SECONDS": _int,
    "TRUSTED_PROXIES": _count,
    "SITE_URL": _str,
    "TRUSTED_HOSTS": _list,
    "REGISTER_LIMIT": _str,
    "WEBSOCKET_ALLOWED_ORIGINS": _list,
    "WEBSOCKET_COMPRESSION": _bool,
    "WEBSOCKET_MAX_MESSAGE_SIZE": _int,
    "WEBSOCKET_PING_INTERVAL": _seconds,
    "WEBSOCKET_PING_TIMEOUT": _seconds,
    "WEBSOCKET_CLOSE_TIMEOUT": _seconds,
    "WEBSOCKET_MAX_QUEUE": _int,
    "WEBSOCKET_MAX_PER_USER": _int,
    "WEBSOCKET_ECHO": _bool,
    "CHAT_MESSAGE_MAX_LENGTH": _int,
    "CHAT_RATE_LIMIT": _str,
    "CHAT_HISTORY": _int,
    "PRESENCE_TTL": _int,
    "PRESENCE_INTERVAL": _seconds,
    "ARGON2_TIME_COST": _int,
    "ARGON2_MEMORY_KIB": _int,
    "ARGON2_PARALLELISM": _int,
    "RESET_LIMIT": _str,
    "TRANSFER_MAX_FILE_SIZE": _int,
    "TRANSFER_USER_QUOTA": _int,
    "TRANSFER_UPLOAD_EXPIRY": _int,
    "TRANSFER_SHARE_MAX_DAYS": _int,
    "TRANSFER_SERVER_HOST": _str,
    "TRANSFER_SERVER_PORT": _int,
    "TRANSFER_SERVER_MAX_CLIENTS": _int,
    "TRANSFER_SERVER_TIMEOUT": _seconds,
    "TRANSFER_SERVER_AUTH_TIMEOUT": _seconds,
    "TRANSFER_TLS_CERT": _str,
    "TRANSFER_TLS_KEY": _str,
    "TRANSFER_ACCEL_REDIRECT": _str,
}
