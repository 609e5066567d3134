#!/usr/bin/env python3
"""Benchmark: concurrent raters against gunicorn + PostgreSQL.

Creates a throw-away PostgreSQL database, migrates it, builds a study in rating with at
least 1,000 outputs straight through the ORM (no sampling: generations are inserted and
turned into outputs by the real import service), starts gunicorn on 127.0.0.1 and lets N
simulated raters (threads, each with its own keep-alive connection and API token) claim and
submit in a loop for a bounded time. Then it reports latency per call, ratings per second,
and checks the invariants in the database:

- no output over its quota (and the counter equals the completed ratings);
- no (output, rater) pair twice, and no rater handed the same output twice;
- no lost rating: every submit that got a 2xx is a completed rating in the database.

Usage (from the repository root):

    .venv/bin/python bench/bench_rating.py                       # 100 raters, 30 s
    .venv/bin/python bench/bench_rating.py --raters 100 --seconds 60 --think 1.0

The database is dropped at the end unless --keep-db. Exit status 1 on any violation.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
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
        "--samples",
        type=int,
        default=9,
        help="samples per prompt (40 prompts × 3 arms × 9 = 1,080 outputs)",
    )
    parser.add_argument("--raters-per-output", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args()


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
    from rest_framework.authtoken.models import Token

    from evaluation import services
    from evaluation.models import Study
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
    tokens = {t.user.username: t.key for t in (Token.objects.create(user=u) for u in raters)}

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
    prompt_set = services.load_demo_prompt_set()
    study = services.study_create(
        name="Bench study",
        prompt_set=prompt_set,
        raters=raters,
        user=admin,
        arms=[services.ArmSpec(arm=v.arm, model_version=v) for v in versions],
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
    study = services.study_sync_sampling(study_id=study.pk)
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
        "gthread",
        "--threads",
        str(args.threads),
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


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


# --- simulated raters -------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.accepted: set[tuple[str, str]] = set()
        self.handed_twice = 0
        self.errors: list[str] = []
        self.measuring = False

    def record(self, call: str, seconds: float, status: int) -> None:
        with self.lock:
            self.status[call][status] += 1
            if self.measuring:
                self.latency[call].append(seconds)


def rater(
    port: int, study_id: int, username: str, token: str, args, rec: Recorder, stop_at: float
) -> None:
    """One simulated rater: claim, read (``--think``), submit, until time is up. Uses the
    standard library's keep-alive HTTP client, which costs the shared CPUs far less per
    call than a richer client would, so the figures measure the server."""
    rng = random.Random(username)
    seen: set[str] = set()
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(name: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        started = time.perf_counter()
        conn.request("POST", path, body=json.dumps(body) if body else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        rec.record(name, time.perf_counter() - started, response.status)
        return response.status, data

    try:
        while time.monotonic() < stop_at:
            try:
                status, data = call("claim", f"/api/rating/studies/{study_id}/claim/")
                if status == 204:
                    time.sleep(0.5)  # nothing for me right now
                    continue
                if status != 200:
                    rec.errors.append(f"claim {status}: {data[:200]!r}")
                    time.sleep(0.5)
                    continue
                public_id = json.loads(data)["output"]
                if public_id in seen:  # handed an output this rater already answered
                    with rec.lock:
                        rec.handed_twice += 1
                if args.think:
                    time.sleep(rng.uniform(0.5, 1.5) * args.think)
                status, data = call(
                    "submit",
                    f"/api/rating/outputs/{public_id}/submit/",
                    {"score": rng.randint(1, 5)},
                )
                if 200 <= status < 300:
                    with rec.lock:
                        rec.accepted.add((username, public_id))
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
        print(
            f"gunicorn on 127.0.0.1:{port}: {args.workers} workers × {args.threads} "
            "threads (gthread)",
            flush=True,
        )
        rec = Recorder()
        begin = time.monotonic()
        stop_at = begin + args.warmup + args.seconds
        threads = [
            threading.Thread(
                target=rater,
                daemon=True,
                args=(port, setup["study"], name, token, args, rec, stop_at),
            )
            for name, token in setup["tokens"].items()
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.warmup)
        with rec.lock:
            rec.measuring = True
            submits_before = sum(v for s, v in rec.status["submit"].items() if s < 300)
        measure_start = time.monotonic()
        for thread in threads:
            thread.join(timeout=max(1.0, stop_at - time.monotonic() + 35))
        measured = time.monotonic() - measure_start
        submits = sum(v for s, v in rec.status["submit"].items() if s < 300) - submits_before
        stop(server)
        server = None
        invariants = check_invariants(setup["study"], rec.accepted, rec.handed_twice)
        violations = sum(
            invariants[k]
            for k in (
                "over_quota",
                "counter_mismatch",
                "duplicate_pairs",
                "handed_same_output_twice",
                "lost_ratings",
            )
        )
        result = {
            "raters": args.raters,
            "seconds": round(measured, 1),
            "think_s": args.think,
            "outputs": setup["outputs"],
            "workers": args.workers,
            "threads": args.threads,
            "cpus": os.cpu_count(),
            "claim": summarise(rec.latency["claim"]),
            "submit": summarise(rec.latency["submit"]),
            "all_calls": summarise(rec.latency["claim"] + rec.latency["submit"]),
            "ratings_per_second": round(submits / measured, 1),
            "status_codes": {k: dict(v) for k, v in rec.status.items()},
            "client_errors": len(rec.errors),
            "first_errors": rec.errors[:5],
            "invariants": invariants,
            "violations": violations,
        }
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 1 if violations else 0
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
            print(f"dropped {db_name}")


if __name__ == "__main__":
    raise SystemExit(main())
