"""Where a transfer stands, the progress bar on stderr, and the summary line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass(frozen=True)
class Outcome:
    """What a push or pull did, for the summary line and for scripts."""

    file_id: str
    path: Path
    name: str
    size: int
    sha256: str
    moved: int  # bytes that crossed the network in this run
    seconds: float
    resumed_from: int  # where this run started (0: from the beginning)


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def summary(verb: str, outcome: Outcome) -> str:
    """The line a command prints on stderr when it is done."""
    seconds = max(outcome.seconds, 1e-6)
    resumed = f", resumed at byte {outcome.resumed_from}" if outcome.resumed_from else ""
    return (
        f"{verb} {outcome.name} ({human_size(outcome.size)}) in {outcome.seconds:.1f} s:"
        f" {human_size(outcome.moved)} moved at {outcome.moved / seconds / 1e6:.1f} MB/s"
        f" average{resumed}; sha256 {outcome.sha256} verified"
    )


def note(message: str) -> None:
    """A line on stderr that does not tear an active progress bar."""
    tqdm.write(message, file=sys.stderr)


class Progress:
    """Where a transfer stands: the bar, the bytes moved in this run, the first offset."""

    def __init__(self, bar: tqdm | None) -> None:
        self.bar = bar
        self.moved = 0
        self.position = 0
        self.first_offset: int | None = None

    def start(self, offset: int) -> None:
        """An attempt begins at *offset* (the server's word for a push, the .part for a pull)."""
        if self.first_offset is None:
            self.first_offset = offset
        if offset:
            note(f"resuming at byte {offset} of {self.bar.total if self.bar else '?'}")
        self.position = offset
        if self.bar is not None and self.bar.n != offset:
            self.bar.n = offset
            self.bar.refresh()

    def advance(self, count: int) -> None:
        self.moved += count
        self.position += count
        if self.bar is not None:
            self.bar.update(count)


@contextlib.contextmanager
def progress_bar(total: int, name: str, show: bool) -> Iterator[tqdm]:
    short = name if len(name) <= 24 else name[:21] + "..."
    with tqdm(
        total=total,
        desc=short,
        unit="B",
        unit_scale=True,
        unit_divisor=1000,
        file=sys.stderr,
        disable=not show,
        mininterval=0.25,
        dynamic_ncols=True,
    ) as bar:
        yield bar
