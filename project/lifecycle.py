"""Process shutdown hooks: say goodbye to long-lived clients before the process ends.

The WebSocket stack (:mod:`project.websocket`) registers a hook that sends
every open WebSocket a 1001 ("going away") close frame. The hooks run when the
server is told to stop: ``manage.py runserver`` on Ctrl-C, and gunicorn workers
on SIGTERM/SIGINT/SIGQUIT (``gunicorn.conf.py`` installs
:func:`install_signal_handlers` in each worker, chained in front of gunicorn's
own handlers).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

_hooks: list[Callable[[], object]] = []


def on_shutdown(hook: Callable[[], object]) -> None:
    """Run *hook* when this process is asked to stop (registered once however often called)."""
    if hook not in _hooks:
        _hooks.append(hook)


def run_shutdown_hooks() -> None:
    for hook in list(_hooks):
        try:
            hook()
        except Exception:  # one failing hook must not stop the others
            log.exception("shutdown hook %r failed", hook)


def _in_background(function: Callable[[], object]) -> None:
    """Start *function* without blocking: a greenlet under gevent, else a thread."""
    try:
        from gevent import monkey
    except ImportError:
        patched = False
    else:
        patched = monkey.is_module_patched("threading")
    if patched:
        import gevent

        gevent.spawn(function)
    else:
        threading.Thread(target=function, name="shutdown-hooks").start()


def install_signal_handlers(
    signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT),
) -> None:
    """Run the hooks (in a thread: a signal handler must not block) before the old handler."""
    for signum in signals:
        previous = signal.getsignal(signum)

        def handler(
            sig: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], object] | int | None = previous,
        ) -> None:
            _in_background(run_shutdown_hooks)
            if callable(previous):
                previous(sig, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
                signal.raise_signal(sig)

        signal.signal(signum, handler)
