"""What bench_rating.py stands on: a throw-away PostgreSQL database with a study in
rating (built through the ORM and the real services), the invariant checks run against
it afterwards, the gunicorn server under test, and the CPU accounting (Linux /proc) that
says what each part spent."""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


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
    from django.utils import timezone

    from evaluation.models import Study
    from evaluation.studies import lifecycle, prompt_sets
    from training.models import BaseModel, JobStatus, ModelVersion, SamplingJob

    admin, raters, tokens = _bench_users(args.raters)

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
    _insert_generations(job, versions, prompts, args.samples)
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


def _bench_users(count: int) -> tuple:
    """An admin who owns the study, and ``count`` raters with their API tokens."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from knox.models import AuthToken

    from palmsweb.roles import Role, ensure_role_groups

    ensure_role_groups()
    User = get_user_model()
    rater_group = Group.objects.get(name=Role.RATER.value)
    admin = User.objects.create_user("bench-admin", is_staff=True)
    raters = User.objects.bulk_create(User(username=f"bench-rater-{i:03d}") for i in range(count))
    rater_group.user_set.add(*raters)
    tokens = {u.username: AuthToken.objects.create(user=u)[1] for u in raters}
    return admin, raters, tokens


def _insert_generations(job, versions, prompts, samples: int) -> None:
    """Made-up generations, as if the sampling job had run: 40 to 120 words each."""
    from training.models import Generation

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
        for s in range(samples)
    )


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
