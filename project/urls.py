"""Parsing of ``DATABASE_URL`` and ``REDIS_URL`` into checked, typed values.

Parsing happens once, at settings time, so that a typo is reported as a
one-line settings error instead of a driver traceback on the first request.
Messages raised here are ``ValueError``; settings prefix the variable name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MYSQL_OPTIONS = {"charset", "unix_socket", "connect_timeout", "ssl_ca"}
MYSQL_SCHEMES = {"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}
DATABASE_URL_HELP = "use sqlite:///path/to/file.db or mysql://user:password@host:3306/name"


@dataclass(frozen=True)
class DatabaseURL:
    """A validated database location: an SQLite file or a MySQL/MariaDB server."""

    engine: str  # "sqlite" or "mysql"
    path: str = ""  # sqlite: absolute file path
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = ""
    password: str = field(default="", repr=False)
    name: str = ""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str, base_dir: Path) -> DatabaseURL:
        """Parse *url*; relative SQLite paths are taken from *base_dir*."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "sqlite":
            if parts.netloc:
                raise ValueError(f"{url!r} has a host; {DATABASE_URL_HELP}")
            raw = unquote(parts.path)[1:]  # sqlite:///rel -> "rel", sqlite:////abs -> "/abs"
            if not raw:
                raise ValueError(f"{url!r} names no file; {DATABASE_URL_HELP}")
            path = Path(raw)
            return cls(engine="sqlite", path=str(path if path.is_absolute() else base_dir / path))
        if scheme in MYSQL_SCHEMES:
            try:
                port = parts.port or 3306
            except ValueError:
                raise ValueError(f"the port in {_redact(url)!r} is not a number") from None
            name = unquote(parts.path.lstrip("/"))
            if not name or "/" in name:
                raise ValueError(f"{_redact(url)!r} names no database; {DATABASE_URL_HELP}")
            options = tuple(parse_qsl(parts.query))
            unknown = {k for k, _ in options} - MYSQL_OPTIONS
            if unknown:
                raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} in the query")
            return cls(
                engine="mysql",
                host=parts.hostname or "127.0.0.1",
                port=port,
                user=unquote(parts.username or "root"),
                password=unquote(parts.password or ""),
                name=name,
                options=options,
            )
        shown = scheme or url
        raise ValueError(f"unsupported database {shown!r}; {DATABASE_URL_HELP}")

    def with_name(self, name: str) -> DatabaseURL:
        """The same server with another database (tests create their own)."""
        return replace(self, name=name)

    @property
    def display(self) -> str:
        """The URL with the password left out, safe for logs and error pages."""
        if self.engine == "sqlite":
            return f"sqlite:///{self.path}"
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.name}"

    @property
    def yoyo_url(self) -> str:
        """The same location in the form yoyo-migrations expects."""
        if self.engine == "sqlite":
            return f"sqlite:///{self.path}"
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        query = "&".join(f"{k}={quote(v)}" for k, v in self.options if k == "unix_socket")
        return f"mysql://{auth}@{self.host}:{self.port}/{quote(self.name)}" + (
            f"?{query}" if query else ""
        )


@dataclass(frozen=True)
class RedisURL:
    """A validated Redis location; the client is built from :attr:`url`."""

    url: str

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        from redis.connection import parse_url

        try:
            parse_url(url)
        except ValueError as exc:  # redis-py says which part is wrong
            raise ValueError(f"{_redact(url)!r}: {exc}") from None
        parts = urlsplit(url)
        # redis-py silently ignores a database that is not a number; we do not.
        if parts.scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError(f"{_redact(url)!r}: the database after the '/' must be a number")
        return cls(url)

    @property
    def display(self) -> str:
        return _redact(self.url)


def _redact(url: str) -> str:
    """Hide the password of a URL so it never reaches a log or an error page."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def parse_site_url(url: str) -> str:
    """``SITE_URL``: ``http(s)://host[:port][/prefix]``, returned without a trailing slash.

    Links that leave the site (emails) are built from it, never from the
    request's ``Host``, which whoever sends the request chooses.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) address; use e.g. https://example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{url!r} must be only scheme, host, port and an optional path")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"the port in {url!r} is not a number") from None
    return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
