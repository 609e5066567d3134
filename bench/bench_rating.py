#!/usr/bin/env python3
"""Benchmark: concurrent raters against gunicorn + PostgreSQL.

Creates a throw-away PostgreSQL database, migrates it, builds a study in rating with at
least 1,000 outputs straight through the ORM (no sampling: generations are inserted and
turned into outputs by the real import service), starts gunicorn on 127.0.0.1 and lets N
simulated raters (threads, each with its own API token and HTTP connection) claim and
submit for a bounded time. Three ways to load the server:

- closed loop (default): every rater claims and submits again as soon as it has an answer,
  so the server is always saturated; the figure that matters is ratings per second;
- ``--think S``: the same, with a rater reading about S seconds before each submit;
- ``--rate R`` (open loop, paced): raters start ratings at R per second in all (Poisson
  arrivals), whatever the server's speed; a claim's latency counts from when it was due,
  so falling behind shows; ``--find-rate`` steps the rate up on one server and study and
  reports the highest rate whose p95 (all calls) stays under ``--target-ms``.

It reports latency per call, ratings per second, the CPU the server and the database spent
per rating, and checks the invariants in the database:

- no output over its quota (and the counter equals the completed ratings);
- no (output, rater) pair twice, and no rater handed the same output twice;
- no lost rating: every submit that got a 2xx is a completed rating in the database.

Usage (from the repository root):

    .venv/bin/python bench/bench_rating.py                       # closed loop, 100 raters, 30 s
    .venv/bin/python bench/bench_rating.py --think 2 --seconds 45
    .venv/bin/python bench/bench_rating.py --rate 60 --seconds 30
    .venv/bin/python bench/bench_rating.py --find-rate

The database is dropped at the end unless --keep-db. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from _rating_setup import (
    ROOT,
    CpuMeter,
    admin_sql,
    bench_env,
    check_invariants,
    describe_server,
    free_port,
    load_average,
    populate,
    start_gunicorn,
    stop,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raters", type=int, default=100, help="concurrent simulated raters")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured start")
    parser.add_argument(
        "--think",
        type=float,
        default=0.0,
        help="mean seconds a rater reads before submitting (0: none)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="open loop: ratings started per second, all raters together",
    )
    parser.add_argument(
        "--find-rate",
        action="store_true",
        help="open loop, stepping the rate up: the highest rate that keeps p95 under target",
    )
    parser.add_argument(
        "--rates",
        default="40,60,80,100,120,140",
        help="--find-rate: the rates to try, in order, until one misses the target (then "
        "two halving steps between the last that met it and the first that missed)",
    )
    parser.add_argument(
        "--step-seconds", type=float, default=10.0, help="--find-rate: measured time per rate"
    )
    parser.add_argument("--target-ms", type=float, default=150.0, help="p95 target (all calls)")
    parser.add_argument(
        "--samples",
        type=int,
        help="samples per prompt, at most 20 (default 9: 40 prompts × 3 arms × 9 = 1,080 "
        "outputs; with --find-rate 20: 2,400 outputs, so that the steps do not use it up)",
    )
    parser.add_argument(
        "--raters-per-output", type=int, help="default 3; with --find-rate 5 (12,000 ratings)"
    )
    parser.add_argument(
        "--worker-class",
        choices=["sync", "gthread"],
        default="sync",
        help="gunicorn worker (sync: one request per process, as in docker-compose.yml)",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.rate is not None and args.find_rate:
        parser.error("--rate and --find-rate exclude each other")
    if args.samples is None:
        args.samples = 20 if args.find_rate else 9
    if args.raters_per_output is None:
        args.raters_per_output = 5 if args.find_rate else 3
    return args


# --- simulated raters -------------------------------------------------------------------------


class Ledger:
    """What every phase adds to, for the invariant checks at the end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: set[tuple[str, str]] = set()
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.handed_twice = 0


class Recorder:
    """One phase: calls that started inside [start, end) are measured."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.ratings = 0
        self.errors: list[str] = []

    def record(self, call: str, due: float, finished: float, status: int) -> None:
        with self.lock:
            self.status[call][status] += 1
            if self.start <= due < self.end:
                self.latency[call].append(finished - due)
            if call == "submit" and 200 <= status < 300 and self.start <= finished < self.end:
                self.ratings += 1


def rater(
    port: int,
    study_id: int,
    username: str,
    token: str,
    args,
    ledger: Ledger,
    rec: Recorder,
    stop_at: float,
    *,
    think: float = 0.0,
    rate: float | None = None,
) -> None:
    """One simulated rater: claim, read (``think``), submit, until time is up. Closed loop
    (``rate`` None): the next claim follows the submit. Open loop: claims fall due at
    Poisson times (``rate`` per second for this rater) and a claim's latency counts from
    when it fell due, so a server that falls behind is charged for it. Uses the standard
    library's HTTP client, which costs the shared CPUs far less per call than a richer
    client would, so the figures measure the server."""
    rng = random.Random(f"{username}:{rec.start}")
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    seen = ledger.seen[username]

    def call(name: str, path: str, body: dict | None = None, due: float | None = None):
        started = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body) if body else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        rec.record(name, started if due is None else due, time.perf_counter(), response.status)
        return response.status, data

    due = time.perf_counter() + rng.expovariate(rate) if rate else None
    try:
        while time.perf_counter() < stop_at:
            if rate:
                if due >= stop_at:
                    break
                time.sleep(max(0.0, due - time.perf_counter()))
            try:
                status, data = call("claim", f"/api/rating/studies/{study_id}/claim/", due=due)
                if rate:
                    due += rng.expovariate(rate)
                if status == 204:
                    if not rate:
                        time.sleep(0.5)  # nothing for me right now
                    continue
                if status != 200:
                    rec.errors.append(f"claim {status}: {data[:200]!r}")
                    time.sleep(0.5)
                    continue
                public_id = json.loads(data)["output"]
                if public_id in seen:  # handed an output this rater already answered
                    with ledger.lock:
                        ledger.handed_twice += 1
                if think:
                    time.sleep(rng.uniform(0.5, 1.5) * think)
                status, data = call(
                    "submit",
                    f"/api/rating/outputs/{public_id}/submit/",
                    {"score": rng.randint(1, 5)},
                )
                if 200 <= status < 300:
                    with ledger.lock:
                        ledger.accepted.add((username, public_id))
                    seen.add(public_id)
                else:
                    rec.errors.append(f"submit {status}: {data[:200]!r}")
            except (OSError, http.client.HTTPException) as error:
                rec.errors.append(f"{type(error).__name__}: {error}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    finally:
        conn.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def summarise(values: list[float]) -> dict:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
    }


def run_phase(
    port: int,
    setup: dict,
    args,
    ledger: Ledger,
    meter: CpuMeter,
    *,
    seconds: float,
    warmup: float,
    think: float = 0.0,
    rate: float | None = None,
) -> dict:
    """Run every rater for ``warmup`` + ``seconds``; measure the last ``seconds``."""
    begin = time.perf_counter()
    start, stop_at = begin + warmup, begin + warmup + seconds
    rec = Recorder(start, stop_at)
    per_rater = rate / len(setup["tokens"]) if rate else None
    threads = [
        threading.Thread(
            target=rater,
            daemon=True,
            args=(port, setup["study"], name, token, args, ledger, rec, stop_at),
            kwargs={"think": think, "rate": per_rater},
        )
        for name, token in setup["tokens"].items()
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, start - time.perf_counter()))
    load_before = load_average()
    cpu = meter.measure(until=stop_at)
    load_after = load_average()
    for thread in threads:
        thread.join(timeout=60)
    ratings = rec.ratings
    calls = rec.latency["claim"] + rec.latency["submit"]
    return {
        "mode": "open loop" if rate else ("think" if think else "closed loop"),
        "offered_ratings_per_second": rate,
        "think_s": think,
        "seconds": seconds,
        "ratings_per_second": round(ratings / seconds, 1),
        "claim": summarise(rec.latency["claim"]),
        "submit": summarise(rec.latency["submit"]),
        "all_calls": summarise(calls),
        "status_codes": {k: dict(v) for k, v in rec.status.items()},
        "client_errors": len(rec.errors),
        "first_errors": rec.errors[:5],
        "cpu_ms_per_rating": {
            part: round(cpu[part] * 1000 / ratings, 2) if ratings else None
            for part in ("gunicorn", "postgres", "bench_client")
        },
        "machine_busy_share": round(cpu["machine_busy_share"], 2)
        if cpu.get("machine_busy_share") is not None
        else None,
        "other_work_cpu_s": round(
            cpu["machine"] - cpu["gunicorn"] - cpu["postgres"] - cpu["bench_client"], 1
        )
        if "machine" in cpu
        else None,
        "load_1min": [load_before, load_after],
    }


def phase_line(phase: dict) -> str:
    offered = phase["offered_ratings_per_second"]
    calls = phase["all_calls"]
    cpu = phase["cpu_ms_per_rating"]
    return (
        (f"offered {offered:g}/s: " if offered else "")
        + f"{phase['ratings_per_second']} ratings/s, all calls p50 {calls['p50_ms']} ms "
        f"p95 {calls['p95_ms']} ms, CPU/rating gunicorn {cpu['gunicorn']} ms "
        f"postgres {cpu['postgres']} ms, load {phase['load_1min'][0]}→{phase['load_1min'][1]}"
    )


def within_target(phase: dict, args) -> bool:
    """p95 under target and no errors. A server that cannot keep up fails on latency:
    a claim's latency counts from when it fell due, so the backlog shows in it."""
    return phase["all_calls"]["p95_ms"] < args.target_ms and not phase["client_errors"]


def find_rate(port, setup, args, ledger, meter) -> dict:
    """Step the open-loop rate up until p95 misses the target; then halve the gap between
    the last rate that met it and the first that did not, twice. Stops early if the study
    runs out of outputs (a step with "nothing left" answers measures nothing)."""
    steps: list[dict] = []

    def step(rate: float) -> bool | None:
        phase = run_phase(
            port, setup, args, ledger, meter, seconds=args.step_seconds, warmup=2.0, rate=rate
        )
        phase["within_target"] = within_target(phase, args)
        steps.append(phase)
        print(("  ok    " if phase["within_target"] else "  MISS  ") + phase_line(phase))
        if phase["status_codes"].get("claim", {}).get(204):
            print("  the study ran out of outputs: stopping (use more --samples)")
            return None
        if not phase["within_target"]:
            time.sleep(5)  # let the database catch up (autovacuum) before the next step
        return phase["within_target"]

    rates = [float(r) for r in args.rates.split(",")]
    # Warm the fresh server up (imports, connections, caches) at half the first rate, so
    # that the first step does not start with a backlog; not measured.
    run_phase(port, setup, args, ledger, meter, seconds=1.0, warmup=5.0, rate=rates[0] / 2)
    best = missed = None
    for rate in rates:
        met = step(rate)
        if met is None:
            return {"max_rate_within_target": best, "steps": steps, "ran_dry": True}
        if not met:
            missed = rate
            break
        best = rate
    for _ in range(2):
        if best is None or missed is None or missed - best <= 5:
            break
        rate = float(round((best + missed) / 2))
        met = step(rate)
        if met is None:
            break
        if met:
            best = rate
        else:
            missed = rate
    return {"max_rate_within_target": best, "target_p95_ms": args.target_ms, "steps": steps}


def run_load(port, setup, args, ledger, meter) -> dict:
    """The measurement the arguments ask for: the --find-rate steps, or one phase."""
    if args.find_rate:
        print(f"open loop, p95 target {args.target_ms:g} ms, {args.step_seconds:g} s a rate:")
        return find_rate(port, setup, args, ledger, meter)
    phase = run_phase(
        port,
        setup,
        args,
        ledger,
        meter,
        seconds=args.seconds,
        warmup=args.warmup,
        think=args.think,
        rate=args.rate,
    )
    print(phase_line(phase))
    return phase


VIOLATIONS = (
    "over_quota",
    "counter_mismatch",
    "duplicate_pairs",
    "handed_same_output_twice",
    "lost_ratings",
)


def invariants_result(study_id: int, ledger: Ledger, ratings_needed: int) -> dict:
    """The invariant checks, their violations summed, and a warning when the study (nearly)
    ran out of outputs: a run that ran dry measured less than it says."""
    invariants = check_invariants(study_id, ledger.accepted, ledger.handed_twice)
    result = {
        "invariants": invariants,
        "violations": sum(invariants[k] for k in VIOLATIONS),
    }
    if invariants["completed_in_db"] >= ratings_needed * 0.95:
        result["warning"] = "the study (nearly) ran out of outputs: use more --samples"
    return result


def main() -> int:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    db_name = f"palms_bench_{os.getpid()}"
    env = bench_env(db_name)
    os.environ.update(env)
    admin_sql(f'CREATE DATABASE "{db_name}"')
    server = None
    try:
        print(f"database {db_name}: migrating …", flush=True)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        setup = populate(args)
        print(
            f"study {setup['study']}: {setup['outputs']} outputs, "
            f"{args.raters_per_output} raters each, {args.raters} raters",
            flush=True,
        )
        from django.db import connections

        connections.close_all()
        port = free_port()
        server = start_gunicorn(env, port, args)
        print(f"gunicorn on 127.0.0.1:{port}: {describe_server(args)}", flush=True)
        ledger = Ledger()
        meter = CpuMeter(server, db_name)
        result = {
            "raters": args.raters,
            "outputs": setup["outputs"],
            "ratings_needed": setup["outputs"] * args.raters_per_output,
            "server": describe_server(args),
            "cpus": os.cpu_count(),
        }
        result.update(run_load(port, setup, args, ledger, meter))
        stop(server)
        server = None
        result.update(invariants_result(setup["study"], ledger, result["ratings_needed"]))
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 1 if result["violations"] else 0
    finally:
        if server is not None:
            stop(server)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        if not args.keep_db:
            admin_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            shutil.rmtree(env["PALMSWEB_VAR_DIR"], ignore_errors=True)
            print(f"dropped {db_name}")


if __name__ == "__main__":
    raise SystemExit(main())
