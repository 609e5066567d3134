"""Energy a job used on this machine, through CodeCarbon in offline mode when it is installed.

CodeCarbon reads the hardware's own energy counters where the machine exposes them (Intel
RAPL for the CPU package, NVML for NVIDIA GPUs); elsewhere it falls back to a power model
(the CPU's TDP times its load). The meter says which: ``measured`` is True only when the
counters were read. Without CodeCarbon (or if it fails to start) the meter estimates
``fallback_watts`` times the wall time. The machine as a whole is measured, not one process:
a distributed run's ranks are child processes, and a gpu worker runs one job at a time.
Only this node is measured; the other nodes of a multi-node run are not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)
MEASURED_CPU_MODES = ("intel_rapl", "rapl", "intel_power_gadget", "powermetrics")


@dataclass(frozen=True)
class EnergyReading:
    kwh: float
    method: str  # in words, for the page
    measured: bool
    cpu_name: str = ""
    gpu_name: str = ""
    wall_seconds: float = 0.0


class EnergyMeter:
    """``with EnergyMeter(fallback_watts=…, device=…) as meter: ...`` then ``meter.reading``."""

    def __init__(self, *, fallback_watts: float, device: str = "cpu") -> None:
        self.fallback_watts = fallback_watts
        self.device = device  # the device type the job computes on ("cuda", "cpu")
        self.tracker: Any = None
        self.started = 0.0
        self.reading: EnergyReading | None = None

    def __enter__(self) -> EnergyMeter:
        try:
            from codecarbon import OfflineEmissionsTracker

            # The country only names CodeCarbon's own CO2 figure, which we do not use: CO2e
            # comes from the configured grid intensity.
            self.tracker = OfflineEmissionsTracker(
                country_iso_code="USA", output_methods=[], log_level="error",
                tracking_mode="machine", measure_power_secs=5,
            )  # fmt: skip
            self.tracker.start()
        except Exception:  # not installed, or no usable sensor at all: the fallback estimate
            logger.info("CodeCarbon unavailable; energy will be estimated", exc_info=True)
            self.tracker = None
        self.started = time.perf_counter()  # CodeCarbon's first start probes the hardware (~2 s)
        return self

    def __exit__(self, *exc_info: object) -> None:
        seconds = time.perf_counter() - self.started
        self.reading = self._from_tracker(seconds) or self._fallback(seconds)

    def _from_tracker(self, seconds: float) -> EnergyReading | None:
        if self.tracker is None:
            return None
        try:
            self.tracker.stop()
            data = self.tracker.final_emissions_data
        except Exception:
            logger.warning("CodeCarbon failed to stop; energy estimated", exc_info=True)
            return None
        if data is None:
            return None
        hardware = getattr(self.tracker, "_hardware", [])  # which sensor CodeCarbon chose
        cpu_mode = next(
            (getattr(h, "_mode", "") for h in hardware if type(h).__name__ == "CPU"), ""
        )
        # The CPU is always counted: only its counters make the whole figure a measurement.
        on_counters = cpu_mode in MEASURED_CPU_MODES
        parts = [f"CPU: {'RAPL counters' if on_counters else f'power model ({cpu_mode})'}"]
        if data.gpu_count:
            parts.append("GPU: NVML counters")
        source = ", ".join(parts)
        return EnergyReading(
            kwh=float(data.energy_consumed), method=f"CodeCarbon; {source}", measured=on_counters,
            cpu_name=data.cpu_model or "", gpu_name=data.gpu_model or "", wall_seconds=seconds,
        )  # fmt: skip

    def _fallback(self, seconds: float) -> EnergyReading:
        kwh = self.fallback_watts * seconds / 3.6e6
        return EnergyReading(
            kwh=kwh, method=f"{self.fallback_watts:g} W x wall time (CodeCarbon unavailable)",
            measured=False, wall_seconds=seconds,
        )  # fmt: skip
