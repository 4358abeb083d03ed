"""The stage of a fault test: a deployment, its traffic, the fault, and what everyone saw.

:class:`Deployment` is the module's real stack: a private Redis and MariaDB
(:mod:`tests.faults.services`), gunicorn with the gevent worker (2 workers) and
``manage.py transfer-server``, each logging to a file, with three users (alice
and bob chat, carol reloads a page) and API keys for alice and bob.

:class:`Scene` plays one fault (:meth:`Scene.play`): it starts the traffic (two
members chatting in a fresh room, carol's page polled, a 200 MiB tus upload as
alice, a TCP push as bob through a slow link), lets it run, calls the fault,
keeps the traffic going until pages recover, then lets everything finish and
returns an :class:`Outcome`. :meth:`Outcome.problems` lists every broken promise
of the reliability model (``../shared/DESIGN.md``), so one run reports them all.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import free_port
from tests.faults.accounts import Account, create_room
from tests.faults.chat import ChatMember, client_id_of
from tests.faults.poller import Answer, Poller
from tests.faults.services import (
    ROOT,
    MariaDBService,
    RedisService,
    SlowLink,
    TransferServer,
)
from tests.faults.uploads import TcpPush, TusUpload, download_sha256
from tests.servers import Server, create_users, start_server
from tests.transfer.conftest import random_file

OUTAGE = 5.0  # seconds a stopped service stays down
RECOVERY_LIMIT = 15.0  # seconds after the service returns by which pages must answer 200
TUS_SIZE = 200 << 20
TCP_SIZE = 96 << 20
TCP_RATE = 8 << 20  # bytes per second through the slow link: the push takes ~12 s
ALLOWED_PAGE_STATUSES = {200, 302, 401, 503}
USERS = ("alice", "bob", "carol")


def api_key(env: dict[str, str], username: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "apikey", "create", username, "--label", "faults"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"fmk_[0-9a-f]{16}_\S+", done.stdout)
    assert match, done.stdout
    return match.group(0)


class Deployment:
    """The module's stack; :meth:`ensure_up` puts back whatever a previous test left down."""

    def __init__(self, base: Path, redis: RedisService, mariadb: MariaDBService) -> None:
        from tests.servers import server_env

        self.base, self.redis, self.mariadb = base, redis, mariadb
        # gunicorn (>= 25) opens a control socket, by default one path per user
        # ($HOME/.gunicorn/gunicorn.ctl) shared by every gunicorn on the machine:
        # this deployment gets its own, so no other gunicorn's commands reach it.
        (base / "run").mkdir(mode=0o700)
        self.gunicorn_log = base / "gunicorn.log"
        self.transfer_log = base / "transfer-server.log"
        self.env = server_env(
            "gevent",
            base,
            mariadb.create_database("site"),
            "faults:",
            redis_url=redis.url,
            MEDIA_ROOT=str(base / "media"),
            GUNICORN_WORKERS="2",
            GUNICORN_GRACEFUL_TIMEOUT="20",
            PRESENCE_TTL="5",
            CHAT_RATE_LIMIT="1000 per 10 seconds",
            XDG_RUNTIME_DIR=str(base / "run"),
        )
        create_users(self.env, *USERS)
        self.keys = {name: api_key(self.env, name) for name in ("alice", "bob")}
        self.port = free_port()
        self.gunicorn: Server = start_server("gevent", self.env, self.port, log=self.gunicorn_log)
        self.transfer = TransferServer(self.env, self.transfer_log)
        self.transfer.start()
        self.tus_file = base / "tus-200MiB.bin"
        self.tus_sha256 = random_file(self.tus_file, TUS_SIZE)

    @property
    def url(self) -> str:
        return self.gunicorn.url

    @property
    def ws(self) -> str:
        return self.gunicorn.ws

    def ensure_up(self, timeout: float = 60) -> None:
        """Every service running and ``/healthz`` answering 200 (after an earlier test's fault)."""
        if not self.redis.running:
            self.redis.start()
        if not self.mariadb.running:
            self.mariadb.start()
        if self.gunicorn.proc.poll() is not None:
            self.gunicorn = start_server("gevent", self.env, self.port, log=self.gunicorn_log)
        if not self.transfer.running:
            self.transfer.start()
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                status = requests.get(self.url + "/healthz", timeout=5).status_code
                if status == 200 and len(self.workers()) == 2:
                    return
            time.sleep(0.2)
        raise AssertionError(f"the deployment is not healthy (/healthz {status}) before the test")

    def workers(self) -> list[int]:
        """The gunicorn master's worker processes."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.gunicorn.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def worker_serving(self, client_port: int) -> int | None:
        """The worker whose socket is connected to 127.0.0.1:*client_port* (a client's end)."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], fields[9]
                    if (
                        int(local.rsplit(":", 1)[1], 16) == self.port
                        and int(remote.rsplit(":", 1)[1], 16) == client_port
                    ):
                        inodes.add(f"socket:[{inode}]")
        for pid in self.workers():
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        if fd.readlink().as_posix() in inodes:
                            return pid
        return None

    def stop(self) -> None:
        self.gunicorn.stop()
        self.transfer.stop()


@dataclass
class Fault:
    """When a fault struck and when the service was back (equal for a signal)."""

    struck: float
    restored: float
    note: str = ""


def log_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


@dataclass
class Outcome:
    """Everything the clients saw during one fault, and the checks over it."""

    name: str
    fault: Fault
    duration: float
    answers: list[Answer]
    login_statuses: list[tuple[float, int, str | None]]
    logins: dict[str, int]
    recovery: float | None
    members: list[ChatMember]
    duplicates_in_db: list[tuple[str, int]]
    tus: TusUpload
    tus_download: tuple[int, str] | None
    tus_sha256: str
    tcp: TcpPush
    tcp_code: int | None
    tcp_download: tuple[int, str] | None
    tcp_sha256: str
    gunicorn_log: str
    transfer_log: str
    extra: dict[str, Any] = field(default_factory=dict)

    # -- figures -----------------------------------------------------------------------------

    def page_statuses(self) -> Counter[int | str]:
        return Counter(
            a.status if a.status is not None else a.error or "error" for a in self.answers
        )

    def outage_statuses(self) -> Counter[int | str]:
        end = self.fault.restored + (self.recovery if self.recovery is not None else RECOVERY_LIMIT)
        return Counter(
            a.status if a.status is not None else a.error or "error"
            for a in self.answers
            if self.fault.struck <= a.started <= end
        )

    def tracebacks(self, log: str) -> list[str]:
        """One entry per logged traceback (a chain of exceptions counts once): the line that
        announced it, and the last exception of the chain."""
        chained = ("During handling of the above exception", "The above exception was the direct")
        exception = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Closed)\b")
        found: list[list[str]] = []
        previous = ""
        for line in log.splitlines():
            if line.startswith("Traceback (most recent call last)"):
                if not previous.startswith(chained):
                    head = re.sub(r"^\[[^\]]*\] (\[\d+\] )?", "", previous.strip())
                    found.append([re.sub(r"\?\S*|[0-9a-f]{12,}", "…", head)[:120], "?"])
            elif found and exception.match(line):
                found[-1][1] = line.strip()[:200]
            if line.strip():
                previous = line
        return [f"{head} -> {tail}" for head, tail in found]

    def missing(self) -> dict[str, int]:
        """For each member, how many messages some sender saw accepted that it never saw."""
        accepted = {cid for m in self.members for cid in m.stats.accepted}
        return {m.account.username: len(accepted - m.seen_client_ids()) for m in self.members}

    def duplicates_seen(self) -> dict[str, int]:
        """client_ids that reached some member under two or more ids."""
        ids: dict[str, set[int]] = {}
        for m in self.members:
            for mid, message in m.view.items():
                if cid := client_id_of(message):
                    ids.setdefault(cid, set()).add(mid)
        return {cid: len(found) for cid, found in ids.items() if len(found) > 1}

    def summary(self) -> dict[str, Any]:
        return {
            "test": self.name,
            "duration_s": round(self.duration, 1),
            "fault": self.fault.note,
            "outage_s": round(self.fault.restored - self.fault.struck, 1),
            "page_statuses": dict(self.page_statuses()),
            "outage_statuses": dict(self.outage_statuses()),
            "login_statuses": dict(Counter(s for _, s, _ in self.login_statuses)),
            "logins": self.logins,
            "recovery_s": None if self.recovery is None else round(self.recovery, 2),
            "chat": {
                m.account.username: {
                    "sent": m.stats.sent,
                    "accepted": len(m.stats.accepted),
                    "unanswered": m.stats.unanswered,
                    "unanswered_on_open_socket": m.stats.timed_out,
                    "disconnects": m.stats.disconnects,
                    "close_codes": dict(Counter(m.stats.close_codes)),
                    "error_frames": dict(
                        Counter(str(e.get("code", e.get("type"))) for e in m.stats.errors)
                    ),
                    "failed_handshakes": dict(
                        Counter(
                            h.status if h.status is not None else "no answer"
                            for h in m.stats.handshakes
                        )
                    ),
                    "seen": len(m.view),
                    "p_max_latency_s": round(max(m.stats.latencies, default=0), 2),
                }
                for m in self.members
            },
            "missing": self.missing(),
            "duplicates_seen": len(self.duplicates_seen()),
            "duplicates_in_db": len(self.duplicates_in_db),
            "tus": {
                "statuses": dict(Counter(self.tus.statuses())),
                "retries": self.tus.retries,
                "seconds": None
                if self.tus.finished_at is None
                else round(self.tus.finished_at - self.tus.attempts[0].at, 1),
                "download": self.tus_download and self.tus_download[0],
                "sha256_ok": bool(self.tus_download and self.tus_download[1] == self.tus_sha256),
            },
            "tcp": {
                "exit": self.tcp_code,
                "retries": len(self.tcp.retry_notes()),
                "download": self.tcp_download and self.tcp_download[0],
                "sha256_ok": bool(self.tcp_download and self.tcp_download[1] == self.tcp_sha256),
            },
            "tracebacks": {
                "gunicorn": len(self.tracebacks(self.gunicorn_log)),
                "transfer-server": len(self.tracebacks(self.transfer_log)),
            },
            **self.extra,
        }

    # -- the contract ------------------------------------------------------------------------

    def problems(self, *, logged_out: bool = False, killed: bool = False) -> list[str]:
        """Every broken promise.

        *logged_out*: the fault is expected to end the sessions. *killed*: a worker was
        killed, so a page request in flight on it at that moment may get no answer.
        """
        found = []
        statuses = self.page_statuses()
        if killed:
            in_flight = [
                a
                for a in self.answers
                if a.status is None and a.started <= self.fault.struck + 0.5 <= a.finished + 0.5
            ]
            for answer in in_flight:
                statuses[answer.error or "error"] -= 1
            statuses = +statuses
        bad = {s: n for s, n in statuses.items() if s not in ALLOWED_PAGE_STATUSES}
        if bad:
            found.append(f"page answers outside {sorted(ALLOWED_PAGE_STATUSES)}: {bad}")
        logins = Counter(s for _, s, _ in self.login_statuses if s not in (200, 302, 503))
        if logins:
            found.append(f"login form answers outside 200/302/503: {dict(logins)}")
        no_retry_after = [a for a in self.answers if a.status == 503 and not a.retry_after] + [
            s for s in self.login_statuses if s[1] == 503 and not s[2]
        ]
        if no_retry_after:
            found.append(f"{len(no_retry_after)} page answers 503 without Retry-After")
        if self.recovery is None or self.recovery > RECOVERY_LIMIT:
            found.append(
                f"pages did not answer 200 within {RECOVERY_LIMIT:g} s of the service's return"
                f" (recovery: {self.recovery})"
            )
        if logged_out:
            if self.logins["carol"] < 2:
                found.append(
                    "the page's user was not sent to log in again after Redis lost the sessions"
                )
        else:
            relogged = {u: n - 1 for u, n in self.logins.items() if n > 1}
            if relogged:
                found.append(f"users were logged out (logged in again: {relogged})")
            if statuses.get(302) or statuses.get(401):
                found.append(
                    "the page sent its logged-in user to the login form"
                    f" ({statuses.get(302, 0)}x 302, {statuses.get(401, 0)}x 401)"
                )
        for m in self.members:
            name = m.account.username
            if m.failure is not None:
                found.append(f"chat client {name} crashed: {m.failure!r}")
            if m.stats.unanswered > m.stats.disconnects:
                found.append(
                    f"{name}: {m.stats.unanswered} messages got no answer at all"
                    f" across {m.stats.disconnects} disconnects ({m.stats.timed_out} of them on a"
                    f" socket that stayed open, no answer in {m.answer_timeout:g} s)"
                )
            refused = [
                e
                for e in m.stats.errors
                if e.get("code") not in ("unavailable", "rate_limited", None)
            ]
            if refused:
                found.append(f"{name}: unexpected error frames {refused[:3]}")
            if not m.idle:
                found.append(f"{name}: a message was still not accepted when the traffic ended")
            hs = [h for h in m.stats.handshakes if h.status not in (None, 101, 401, 503)]
            if hs:
                found.append(
                    f"{name}: socket handshakes answered {dict(Counter(h.status for h in hs))}"
                )
            hs503 = [h for h in m.stats.handshakes if h.status == 503 and not h.retry_after]
            if hs503:
                found.append(
                    f"{name}: {len(hs503)} socket handshakes answered 503 without Retry-After"
                )
            internal = [c for c in m.stats.close_codes if c not in (1000, 1001, 1008, None)]
            if internal:
                found.append(
                    f"{name}: the server closed the socket with {dict(Counter(internal))}"
                    " (an expected fault should give an `unavailable` error frame, socket open)"
                )
            if len(m.stats.accepted) < 3:
                found.append(f"{name}: only {len(m.stats.accepted)} messages were accepted")
        missing = {u: n for u, n in self.missing().items() if n}
        if missing:
            found.append(f"accepted chat messages never seen by a member: {missing}")
        if self.duplicates_in_db or self.duplicates_seen():
            found.append(
                f"messages stored twice: {len(self.duplicates_in_db)} bodies in the database,"
                f" {len(self.duplicates_seen())} client_ids under two ids in the members' views"
            )
        if self.tus.failure is not None or self.tus.finished_at is None:
            found.append(f"the tus upload did not finish: {self.tus.failure!r}")
        elif self.tus_download is None or self.tus_download != (200, self.tus_sha256):
            found.append(f"the tus upload's file is not right: download {self.tus_download}")
        # A client doing nothing wrong may see its answers and 503 (with Retry-After) only:
        # a 400 or 403 would tell it its request was at fault (a CSRF check that could not
        # see the API key while the database was down did that once).
        tus_bad = [
            a
            for a in self.tus.attempts
            if a.status is not None
            and a.status not in (200, 201, 204)
            and not (a.status == 503 and a.retry_after)
        ]
        if tus_bad:
            kinds = dict(Counter(a.status for a in tus_bad))
            found.append(f"tus answers other than success or 503 with Retry-After: {kinds}")
        if self.tcp_code != 0:
            found.append(f"the TCP push exited {self.tcp_code}: {self.tcp.log[-600:]}")
        elif self.tcp_download is None or self.tcp_download != (200, self.tcp_sha256):
            found.append(f"the TCP push's file is not right: download {self.tcp_download}")
        for which, log in (("gunicorn", self.gunicorn_log), ("transfer-server", self.transfer_log)):
            tracebacks = self.tracebacks(log)
            if tracebacks:
                kinds = Counter(tracebacks).most_common(6)
                found.append(f"{len(tracebacks)} tracebacks in the {which} log: {kinds}")
        return found


class Scene:
    """One fault test's traffic against *deployment*."""

    def __init__(self, deployment: Deployment, name: str, workdir: Path) -> None:
        self.d, self.name, self.workdir = deployment, name, workdir
        self.accounts = {u: Account(deployment.url, u) for u in USERS}

    def play(self, fault: Callable[[Scene], Fault]) -> Outcome:
        d = self.d
        d.ensure_up()
        started = time.monotonic()
        logs = (d.gunicorn_log.stat().st_size, d.transfer_log.stat().st_size)
        for account in self.accounts.values():
            account.login()
        room = f"f{uuid.uuid4().hex[:12]}"
        create_room(self.accounts["alice"], room)

        self.members = [ChatMember(self.accounts[u], d.ws, room) for u in ("alice", "bob")]
        for member in self.members:
            member.start()
        poller = Poller(self.accounts["carol"])
        poller.start()
        tus = TusUpload(d.url, d.keys["alice"], d.tus_file, d.tus_sha256)
        tcp_file = self.workdir / f"push-{self.name}.bin"
        tcp_sha256 = random_file(tcp_file, TCP_SIZE)
        link = SlowLink(d.transfer.port, TCP_RATE)
        for member in self.members:
            assert member.connected.wait(15), (
                f"{member.account.username} could not join the room: {member.stats.handshakes[-3:]}"
                f" {member.failure!r}"
            )
            member.start_sending()
        tus.start()
        tcp = TcpPush(tcp_file, d.keys["bob"], link.port, self.workdir)
        self._wait(lambda: all(len(m.stats.accepted) >= 2 for m in self.members), 15)
        time.sleep(2)  # everything in flight

        happened = fault(self)

        # Traffic goes on until pages recover (or the limit passes), and a little longer.
        self._wait(lambda: poller.recovery(happened.restored) is not None, RECOVERY_LIMIT + 5)
        time.sleep(3)
        for member in self.members:
            member.stop_sending()
        self._wait(lambda: all(m.idle for m in self.members), 30)
        tus.done.wait(180)
        tcp_code = tcp.wait(timeout=180)
        accepted = {cid for m in self.members for cid in m.stats.accepted}
        self._wait(lambda: all(accepted <= m.seen_client_ids() for m in self.members), 10)
        poller.stop()
        for member in self.members:
            member.stop()
        link.close()

        tus_download = tcp_download = None
        if tus.finished_at is not None and tus.file_id:
            tus_download = download_sha256(d.url, d.keys["alice"], tus.file_id)
        if tcp_code == 0:
            tcp_download = download_sha256(d.url, d.keys["bob"], tcp.file_id)
        tcp_file.unlink()
        return Outcome(
            name=self.name,
            fault=happened,
            duration=time.monotonic() - started,
            answers=poller.answers,
            login_statuses=[s for a in self.accounts.values() for s in a.statuses],
            logins={u: a.logins for u, a in self.accounts.items()},
            recovery=poller.recovery(happened.restored),
            members=self.members,
            duplicates_in_db=self._duplicates_in_db(room),
            tus=tus,
            tus_download=tus_download,
            tus_sha256=d.tus_sha256,
            tcp=tcp,
            tcp_code=tcp_code,
            tcp_download=tcp_download,
            tcp_sha256=tcp_sha256,
            gunicorn_log=log_from(d.gunicorn_log, logs[0]),
            transfer_log=log_from(d.transfer_log, logs[1]),
        )

    def _duplicates_in_db(self, room: str) -> list[tuple[str, int]]:
        conn = self.d.mariadb.connect("site")
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT m.body, COUNT(*) FROM chat_messages m JOIN chat_rooms r"
                    " ON r.id = m.room_id WHERE r.name = %s GROUP BY m.body HAVING COUNT(*) > 1",
                    (room,),
                )
                return [(str(body), int(n)) for body, n in cur.fetchall()]
        finally:
            conn.close()

    @staticmethod
    def _wait(condition: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.1)
        return condition()

    # -- faults, for the tests --------------------------------------------------------------------

    def stop_for(self, stop: Callable[[], None], start: Callable[[], None], note: str) -> Fault:
        """Stop a service, keep it down for OUTAGE seconds, start it again."""
        struck = time.monotonic()
        stop()
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - struck)))
        start()
        return Fault(struck, time.monotonic(), note)

    def signal_master(self, sig: signal.Signals) -> Fault:
        at = time.monotonic()
        self.d.gunicorn.proc.send_signal(sig)
        return Fault(at, at, f"gunicorn master {sig.name}")

    def kill_transfer_server(self) -> Fault:
        """SIGKILL the TCP transfer server mid-push; start it again a second later."""
        at = time.monotonic()
        self.d.transfer.kill()
        time.sleep(1.0)
        self.d.transfer.start()
        return Fault(at, time.monotonic(), "SIGKILL the transfer server, restarted after 1 s")

    def kill_worker(self) -> Fault:
        """SIGKILL the worker serving alice's socket (else the first worker)."""
        port = self.members[0].local_port
        pid = self.d.worker_serving(port) if port else None
        chosen = "alice's socket's worker"
        if pid is None:
            pid, chosen = self.d.workers()[0], "the first worker (alice's socket not found)"
        at = time.monotonic()
        subprocess.run(["kill", "-9", str(pid)], check=True)
        return Fault(at, at, f"SIGKILL {chosen} (pid {pid})")
