"""Compute accounting: FLOPs by the 6N/2N rules, CO2e from the grid setting, totals."""

from __future__ import annotations

import pytest

from palmsweb.lib.compute import (
    for_page,
    generation_flops,
    job_record,
    summary,
    total,
    training_flops,
)


def record(**overrides) -> dict:
    fields = {
        "kind": "fine-tune", "device_type": "cuda", "device_name": "H100", "device_count": 2,
        "wall_seconds": 1800.0, "tokens": 1_000_000,
        "flops": training_flops(135_000_000, 1_000_000),
        "energy_kwh": 0.5, "energy_method": "CodeCarbon", "energy_measured": True,
        "grid_g_per_kwh": 400.0,
    }  # fmt: skip
    return job_record(**(fields | overrides))


def test_flops_follow_six_n_d_for_training_and_two_n_d_for_generation():
    assert training_flops(135_000_000, 1_000) == 6 * 135_000_000 * 1_000
    assert generation_flops(135_000_000, 1_000) == 2 * 135_000_000 * 1_000


def test_a_record_counts_device_seconds_and_co2e_from_the_grid_intensity():
    one = record()
    assert one["device_seconds"] == 3600.0
    assert one["co2e_kg"] == pytest.approx(0.2)  # 0.5 kWh x 400 g/kWh
    assert one["energy_estimated"] is False
    assert record(energy_measured=False)["energy_estimated"] is True


def test_totals_add_up_and_are_estimated_when_any_part_is():
    both = total([record(), record(energy_measured=False, energy_kwh=0.25), {}])
    assert both["jobs"] == 2
    assert both["energy_kwh"] == pytest.approx(0.75)
    assert both["device_seconds"] == 7200.0 and both["energy_estimated"] is True
    assert total([record()])["energy_estimated"] is False
    assert total([])["jobs"] == 0


def test_the_page_line_says_estimated_only_when_it_is():
    assert "(estimated)" not in summary(record())
    assert "0.5 kWh (estimated)" in summary(record(energy_measured=False))
    assert summary({}) == "" and for_page({}) == {}
    shown = for_page(record())
    assert shown["flops_rule"] == "6 x parameters x tokens" and shown["co2e_g"] == "200"


def test_a_job_without_a_flops_estimate_says_so_and_totals_count_it_apart():
    remote = record(kind="scoring", flops=None, flops_note="remote API", tokens=0)
    assert remote["flops"] is None and remote["flops_note"] == "remote API"
    assert "FLOPs not estimated" in summary(remote)
    shown = for_page(remote)
    assert shown["flops_text"] == "not estimated" and shown["flops_rule"] == "remote API"
    assert for_page(record(kind="scoring"))["flops_rule"] == "2 x parameters x tokens read"
    both = total([record(), remote])
    assert both["flops"] == record()["flops"] and both["flops_missing"] == 1
    assert both["jobs_by_kind"] == {"fine-tune": 1, "scoring": 1}
    assert "(1 job(s) not estimated)" in summary(both)
