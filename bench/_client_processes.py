"""Load-generating client processes and their pipes: the coordinator's side.

Benchmarks that need more client sockets (or client CPU) than one process
gives start several, each running *target* on its end of a pipe and answering
one reply per command. Spawned, not forked: no copy of the coordinator's
sockets or threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench._harness import log


class ClientProcesses:
    """One process per entry of *args*, each started as ``target(pipe, *entry)``."""

    def __init__(self, target: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for entry in args:
            ours, theirs = context.Pipe()
            proc = context.Process(target=target, args=(theirs, *entry), daemon=True)
            proc.start()
            theirs.close()
            self.pipes.append(ours)
            self.procs.append(proc)

    def ask(self, commands: list[tuple[Any, ...] | None], seconds: float) -> list[Any]:
        """Send each process its command (None: none), wait at most ``seconds`` for replies."""
        waiting: dict[multiprocessing.connection.Connection, None] = {}
        for pipe, command in zip(self.pipes, commands, strict=True):
            if command is not None:
                pipe.send(command)
                waiting[pipe] = None
        replies: dict[Any, Any] = {}
        deadline = time.monotonic() + seconds
        while len(replies) < len(waiting):
            left = deadline - time.monotonic()
            ready = multiprocessing.connection.wait(
                [p for p in waiting if p not in replies], max(0.0, left)
            )
            if not ready:
                raise RuntimeError(f"client processes did not answer {commands} in {seconds} s")
            for answered in ready:
                assert isinstance(answered, multiprocessing.connection.Connection)
                try:
                    replies[answered] = answered.recv()
                except EOFError:
                    raise RuntimeError("a client process died") from None
        return [replies.get(pipe) for pipe in self.pipes]

    def all(self, command: tuple[Any, ...], seconds: float) -> list[Any]:
        """The same command to every process; their replies, in process order."""
        return self.ask([command] * len(self.pipes), seconds)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def stop(self) -> None:
        """Ask each process to quit, then terminate and kill what is left."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("quit",))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self.pipes:
            pipe.close()
        log(f"stopped {len(self.procs)} client processes")
