"""Progress of long stages: run functions send `Progress` updates; a `ProgressReporter` shows them.

The run functions (`run_train`, `run_evaluate`, ...) only call an optional `progress` callback; how it is shown is
the caller's choice. `ProgressReporter` is the one renderer the flows and the accelerator driver share: a tqdm bar
when its stream is a terminal (tqdm's `disable=None`), and otherwise (CI, a log file, Prefect's logger) one log line
every `interval_s` seconds with the rate and the time left, every `event` (a fold finished, a test set scored), and
one closing line when the stage ends (the reporter is closed, or the next stage begins).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any


@dataclass(frozen=True)
class Progress:
    """Where a long stage is.

    Attributes:
        stage: e.g. "train".
        done: units finished (epochs, files, images).
        total: units in all, when known.
        unit: what a unit is ("epoch", "file", "image").
        detail: what it is doing now (e.g. "fold1 epoch 7/24 mAP50 0.812"); shown on the bar and in periodic lines.
        event: a one-off message that is always logged (e.g. "fold1 done: mAP50 0.912").
    """

    stage: str
    done: int
    total: int | None
    unit: str
    detail: str = ""
    event: str = ""


ProgressFn = Callable[[Progress], None]


def duration(seconds: float) -> str:
    """`75` -> `1m15s`; `3725` -> `1h02m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class _Clock:
    """Rate and time left of one stage, measured from its first update (units already done then, e.g. reused
    folds or resumed files, arrive at once and would otherwise inflate the rate)."""

    def __init__(self, done: int, now: float) -> None:
        self.start, self.start_done, self.last_line = now, done, now

    def rate(self, done: int, now: float) -> float | None:
        elapsed = now - self.start
        return (done - self.start_done) / elapsed if elapsed > 0 and done > self.start_done else None


class ProgressReporter:
    """Shows `Progress` updates: a bar on a terminal, periodic log lines elsewhere.

    Use as the `progress` callback of a run function (`reporter(update)`), or `reporter.counter(stage, unit)` for
    cores that call `progress(done, total)`. One reporter may follow several stages in turn; close it at the end.

    Args:
        log: where lines go when there is no terminal (default: print to `stream`).
        interval_s: seconds between periodic lines (events and a stage's closing line are always logged).
        stream: the bar's stream (default stderr); a bar is drawn only if it is a terminal.
        bar: force the bar on or off (default: tqdm's `disable=None`, i.e. on for a terminal).
        clock: time source (tests).
    """

    def __init__(
        self,
        log: Callable[[str], Any] | None = None,
        *,
        interval_s: float = 30.0,
        stream: IO[str] | None = None,
        bar: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.log = log or (lambda line: print(line, file=self.stream, flush=True))
        self.interval_s = interval_s
        self.want_bar = bar
        self.clock = clock
        self._bar: Any = None
        self._stage: str | None = None
        self._clocks: dict[str, _Clock] = {}
        self._last: Progress | None = None

    def __call__(self, update: Progress) -> None:
        now = self.clock()
        if update.stage != self._stage:
            self._finish()
            self._stage = update.stage
            self._clocks[update.stage] = _Clock(update.done, now)
            self._bar = self._open_bar(update)
        clock = self._clocks[update.stage]
        self._last = update
        if self._bar is not None:
            self._draw(update)
            if update.event:
                self._bar.write(f"{update.stage}: {update.event}", file=self.stream)
            return
        if update.event:
            self.log(f"{update.stage}: {update.event}")
        if now - clock.last_line >= self.interval_s:
            self.log(self.line(update, now))
            clock.last_line = now

    def counter(self, stage: str, unit: str) -> Callable[[int, int], None]:
        """A `progress(done, total)` callback (ingest and synth cores) that reports to this reporter."""

        def progress(done: int, total: int) -> None:
            self(Progress(stage, done, total, unit))

        return progress

    def line(self, update: Progress, now: float | None = None) -> str:
        """`train: 14/48 epochs (29%), 0.21 epoch/s, 2m42s left; fold1 epoch 7/24 mAP50 0.812`."""
        now = self.clock() if now is None else now
        clock = self._clocks.get(update.stage) or _Clock(update.done, now)
        text = f"{update.stage}: {update.done}"
        if update.total:
            text += f"/{update.total} {update.unit}s ({100 * update.done / update.total:.0f}%)"
        else:
            text += f" {update.unit}s"
        rate = clock.rate(update.done, now)
        if rate:
            text += f", {rate:.2f} {update.unit}/s" if rate < 10 else f", {rate:.0f} {update.unit}/s"
        if update.total and update.done >= update.total:
            text += f" in {duration(now - clock.start)}"
        elif update.total and rate:
            text += f", {duration((update.total - update.done) / rate)} left"
        return text + (f"; {update.detail}" if update.detail else "")

    def close(self) -> None:
        """Close the open bar (or log the last state of an unfinished stage)."""
        self._finish()
        self._stage = None

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_bar(self, update: Progress) -> Any:
        if self.want_bar is False:
            return None
        from tqdm import tqdm

        bar = tqdm(
            total=update.total,
            initial=update.done,
            unit=update.unit,
            desc=update.stage,
            file=self.stream,
            disable=None if self.want_bar is None else False,  # None: off unless the stream is a terminal
            dynamic_ncols=True,
        )
        if bar.disable:
            bar.close()
            return None
        return bar

    def _draw(self, update: Progress) -> None:
        bar = self._bar
        if update.total is not None and bar.total != update.total:
            bar.total = update.total
        bar.update(update.done - bar.n)
        if update.detail:
            bar.set_postfix_str(update.detail, refresh=False)
        bar.refresh()

    def _finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._last is not None:  # the stage's last word: its total time, or where it stopped
            self.log(self.line(self._last))
        self._last = None
