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
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


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


# --- database ---------------------------------------------------------------------------


def admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(sql)


def bench_env(db_name: str) -> dict:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"{base}/{db_name}",
            "SECRET_KEY": secrets.token_urlsafe(32),
            "DJANGO_SETTINGS_MODULE": "palmsweb.settings",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "0",  # plain HTTP on the loopback
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "PALMSWEB_VAR_DIR": f"/tmp/{db_name}-var",
        }
    )
    return env


def populate(args: argparse.Namespace) -> dict:
    """Build the study through the ORM and services in this process; return what the
    simulated raters need (study id, tokens)."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.utils import timezone
    from knox.models import AuthToken

    from evaluation.models import Study
    from evaluation.studies import lifecycle, prompt_sets
    from palmsweb.roles import Role, ensure_role_groups
    from training.models import BaseModel, Generation, JobStatus, ModelVersion, SamplingJob

    ensure_role_groups()
    User = get_user_model()
    rater_group = Group.objects.get(name=Role.RATER.value)
    admin = User.objects.create_user("bench-admin", is_staff=True)
    raters = User.objects.bulk_create(
        User(username=f"bench-rater-{i:03d}") for i in range(args.raters)
    )
    rater_group.user_set.add(*raters)
    tokens = {u.username: AuthToken.objects.create(user=u)[1] for u in raters}

    base = BaseModel.objects.create(
        name="Bench base",
        kind=BaseModel.Kind.LOCAL_DIR,
        path="/nonexistent",
        parameter_count=135_000_000,
    )
    versions = [
        ModelVersion.objects.create(base_model=base, name=f"Bench {arm}", arm=arm)
        for arm in ("base", "control", "values_targeted")
    ]
    prompt_set = prompt_sets.load_demo_prompt_set()
    study = lifecycle.study_create(
        name="Bench study",
        prompt_set=prompt_set,
        raters=raters,
        user=admin,
        arms=[lifecycle.ArmSpec(arm=v.arm, model_version=v) for v in versions],
        samples_per_prompt=args.samples,
        raters_per_output=args.raters_per_output,
    )
    prompts = list(prompt_set.prompts.select_related("category"))
    job = SamplingJob.objects.create(
        name="bench",
        prompts=[{"text": p.text, "category": p.category.name} for p in prompts],
        n_samples=args.samples,
        status=JobStatus.SUCCEEDED,
        finished_at=timezone.now(),
    )
    job.model_versions.set(versions)
    rng = random.Random(7)
    words = "care kindness help safety respect people talk trust listen support".split()
    Generation.objects.bulk_create(
        Generation(
            job=job,
            model_version=v,
            prompt_index=i,
            sample_index=s,
            prompt_text=p.text,
            temperature=0.7,
            top_p=0.9,
            max_new_tokens=200,
            seed=s,
            text=" ".join(rng.choice(words) for _ in range(rng.randint(40, 120))) + ".",
        )
        for v in versions
        for i, p in enumerate(prompts)
        for s in range(args.samples)
    )
    Study.objects.filter(pk=study.pk).update(
        status=Study.Status.SAMPLING, sampling_job=job, prompt_ids=[p.pk for p in prompts]
    )
    study = lifecycle.study_sync_sampling(study_id=study.pk)
    assert study.status == Study.Status.RATING
    from django.db import connection

    with connection.cursor() as cursor:
        # Fresh tables have no planner statistics; autovacuum would gather them within
        # minutes in a running system. Gather them now so the run measures steady state.
        cursor.execute("ANALYZE")
    return {"study": study.pk, "tokens": tokens, "outputs": study.outputs.count()}


def check_invariants(study_id: int, accepted: set[tuple[str, str]], handed_twice: int) -> dict:
    from django.db.models import Count, F

    from evaluation.models import Rating, StudyOutput

    outputs = StudyOutput.objects.filter(study_id=study_id)
    over_quota = outputs.filter(completed_count__gt=F("quota")).count()
    counted = dict(
        Rating.objects.filter(study_id=study_id, status="completed")
        .values("output")
        .annotate(n=Count("pk"))
        .values_list("output", "n")
    )
    counter_mismatch = sum(
        1
        for o in outputs.only("pk", "completed_count")
        if o.completed_count != counted.get(o.pk, 0)
    )
    duplicate_pairs = (
        Rating.objects.filter(study_id=study_id)
        .values("output", "rater")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    stored = set(
        Rating.objects.filter(study_id=study_id, status="completed").values_list(
            "rater__username", "output__public_id"
        )
    )
    lost = len(accepted - stored)
    return {
        "over_quota": over_quota,
        "counter_mismatch": counter_mismatch,
        "duplicate_pairs": duplicate_pairs,
        "handed_same_output_twice": handed_twice,
        "lost_ratings": lost,
        "completed_in_db": len(stored),
        "accepted_submits": len(accepted),
    }


# --- the web server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict, port: int, args) -> subprocess.Popen:
    log = open(f"/tmp/bench-rating-gunicorn-{port}.log", "w")  # noqa: SIM115
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "palmsweb.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(args.workers),
        "--worker-class",
        args.worker_class,
        *(["--threads", str(args.threads)] if args.worker_class == "gthread" else []),
        "--keep-alive",
        "30",
        "--backlog",
        "512",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited; see {log.name}")
        time.sleep(0.3)
    raise SystemExit("gunicorn did not answer /healthz within 60 s")


def describe_server(args) -> str:
    if args.worker_class == "gthread":
        return f"{args.workers} gthread workers × {args.threads} threads"
    return f"{args.workers} sync workers"


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


# --- CPU accounting (Linux /proc; None elsewhere) ----------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def child_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine, all cores."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return None


class CpuMeter:
    """CPU spent by gunicorn (master and workers), by the PostgreSQL backends serving the
    bench database (when PostgreSQL runs on this machine), by this process (the simulated
    raters) and by the machine as a whole: the last shows how much other work ran.
    Processes come and go (Django reconnects after ``CONN_MAX_AGE``), so a sampler reads
    them twice a second and a process that exits keeps what it had spent when last seen."""

    def __init__(self, server: subprocess.Popen, db_name: str) -> None:
        self.server = server
        self.db_name = db_name
        host = PG_ADMIN_URL.split("@")[-1].split("/")[0].split(":")[0]
        self.local_db = host in {"", "127.0.0.1", "localhost", "::1"}

    def _db_pids(self) -> list[int]:
        if not self.local_db:
            return []
        import psycopg

        with psycopg.connect(
            PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
        ) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", [self.db_name]
            ).fetchall()
        return [pid for (pid,) in rows]

    def _read(self, into: dict) -> None:
        for part, pids in (
            ("gunicorn", [self.server.pid, *child_pids(self.server.pid)]),
            ("postgres", self._db_pids()),
        ):
            for pid in pids:
                cpu = process_cpu(pid)
                if cpu is not None:
                    into[part][pid] = cpu

    def measure(self, until: float) -> dict:
        """Sample until ``until`` (a ``time.perf_counter`` value); CPU seconds per part."""
        first: dict = {"gunicorn": {}, "postgres": {}}
        self._read(first)
        last = {part: dict(pids) for part, pids in first.items()}
        client, machine = sum(os.times()[:2]), machine_busy()
        while (left := until - time.perf_counter()) > 0:
            time.sleep(min(0.5, left))
            self._read(last)
        spent = {
            part: sum(cpu - first[part].get(pid, 0.0) for pid, cpu in last[part].items())
            for part in last
        }
        spent["bench_client"] = sum(os.times()[:2]) - client
        after = machine_busy()
        if machine and after:
            busy, total = after[0] - machine[0], after[1] - machine[1]
            spent["machine"] = busy
            spent["machine_busy_share"] = busy / total if total else None
        return spent


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
        if args.find_rate:
            print(f"open loop, p95 target {args.target_ms:g} ms, {args.step_seconds:g} s a rate:")
            result.update(find_rate(port, setup, args, ledger, meter))
        else:
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
            result.update(phase)
        stop(server)
        server = None
        invariants = check_invariants(setup["study"], ledger.accepted, ledger.handed_twice)
        result["invariants"] = invariants
        result["violations"] = sum(
            invariants[k]
            for k in (
                "over_quota",
                "counter_mismatch",
                "duplicate_pairs",
                "handed_same_output_twice",
                "lost_ratings",
            )
        )
        if invariants["completed_in_db"] >= result["ratings_needed"] * 0.95:
            result["warning"] = "the study (nearly) ran out of outputs: use more --samples"
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
