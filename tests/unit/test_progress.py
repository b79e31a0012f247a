"""Progress of long stages: periodic lines off a terminal, a bar on one, rate and time left."""

from __future__ import annotations

import io

from pipelines.progress import Progress, ProgressReporter, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_interval_with_rate_and_time_left_off_a_terminal() -> None:
    clock, lines = Clock(), []
    reporter = ProgressReporter(lines.append, interval_s=30, stream=io.StringIO(), clock=clock)
    reporter(Progress("train", 4, 20, "epoch", event="2 models x 10 epochs"))  # 4 epochs reused: not in the rate
    assert lines == ["train: 2 models x 10 epochs"]
    for done in range(5, 12):
        clock.now += 10
        reporter(Progress("train", done, 20, "epoch", f"fold1 epoch {done - 4}/10 mAP50 0.{done}00"))
    # one line per 30 s: at 130 s (6 of 20 done, 2 epochs in 30 s) and at 160 s (9 done)
    assert lines[1:] == [
        "train: 7/20 epochs (35%), 0.10 epoch/s, 2m10s left; fold1 epoch 3/10 mAP50 0.700",
        "train: 10/20 epochs (50%), 0.10 epoch/s, 1m40s left; fold1 epoch 6/10 mAP50 0.1000",
    ]
    clock.now += 1
    reporter(Progress("train", 11, 20, "epoch", event="fold1 done: mAP50 0.912"))  # events are never held back
    assert lines[-1] == "train: fold1 done: mAP50 0.912"
    clock.now += 1
    reporter(Progress("train", 20, 20, "epoch"))
    clock.now += 3
    reporter(Progress("train", 20, 20, "epoch", event="fold2 done: mAP50 0.901"))  # all epochs in, a fold ends
    assert lines[-1] == "train: fold2 done: mAP50 0.901"  # no repeated 100% lines while the last folds close
    reporter.close()  # the closing line, once
    assert lines[-1] == "train: 20/20 epochs (100%), 0.21 epoch/s in 1m15s"
    n = len(lines)
    reporter.close()
    assert len(lines) == n


def test_an_unfinished_stage_says_where_it_stopped_and_a_new_stage_starts_afresh() -> None:
    clock, lines = Clock(), []
    reporter = ProgressReporter(lines.append, interval_s=30, stream=io.StringIO(), clock=clock)
    ingest = reporter.counter("ingest", "file")
    ingest(0, 400)
    clock.now += 2
    ingest(250, 400)
    reporter(Progress("evaluate", 0, 30, "image", "external_test: predicting 30 images"))
    assert lines == ["ingest: 250/400 files (62%), 125 file/s, 1s left"]
    clock.now += 5
    reporter(Progress("evaluate", 30, 30, "image", "external_test: scored"))
    assert len(lines) == 1
    reporter.close()
    assert lines[-1] == "evaluate: 30/30 images (100%), 6.00 image/s in 5s; external_test: scored"


def test_a_bar_on_a_terminal_and_no_lines() -> None:
    stream, lines = io.StringIO(), []
    with ProgressReporter(lines.append, stream=stream, bar=True) as reporter:
        reporter(Progress("train", 0, 10, "epoch", "fold0 starting"))
        reporter(Progress("train", 3, 10, "epoch", "fold0 epoch 3/10 mAP50 0.512", event="something happened"))
    text = stream.getvalue()
    assert "train" in text and "3/10" in text and "fold0 epoch 3/10 mAP50 0.512" in text
    assert "train: something happened" in text
    assert lines == []


def test_no_bar_when_the_stream_is_not_a_terminal() -> None:
    stream, lines = io.StringIO(), []
    with ProgressReporter(lines.append, stream=stream) as reporter:  # tqdm's disable=None: StringIO is no TTY
        reporter(Progress("ingest", 1, 1, "file"))
    assert stream.getvalue() == "" and lines == ["ingest: 1/1 files (100%) in 0s"]


def test_duration() -> None:
    assert [duration(s) for s in (0, 59.4, 75, 3725)] == ["0s", "59s", "1m15s", "1h02m"]
