"""The progress helpers every long job uses: durations, ETAs that count down, throughput."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from palmsweb.lib.progress import Throughput, format_duration, seconds_left


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(None, ""), (5.4, "5 s"), (75, "1 min 15 s"), (3_700, "1 h 01 min"), (-1, "")],
)
def test_durations_read_naturally(seconds, label):
    assert format_duration(seconds) == label


def test_an_estimate_counts_down_from_when_it_was_made_and_stops_at_zero():
    made = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert seconds_left(100, made, made + timedelta(seconds=30)) == 70
    assert seconds_left(100, made, made + timedelta(seconds=130)) == 0
    assert seconds_left(100, None, made) == 100
    assert seconds_left(None, made, made) is None
    assert seconds_left(float("inf"), made, made) is None


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_throughput_leaves_the_start_up_time_out_once_it_can():
    clock = Clock()
    throughput = Throughput(100, clock=clock)
    assert throughput.eta(0) is None
    clock.now = 30.0  # 20 s of model loading, then 10 outputs in 10 s
    assert throughput.eta(10) == pytest.approx(90 / (10 / 30))  # start-up counted: 270 s
    clock.now = 40.0
    assert throughput.eta(20) == pytest.approx(80 / (10 / 10))  # 1 output/s from here: 80 s
    clock.now = 50.0
    assert throughput.eta(100) == 0
