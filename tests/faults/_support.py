"""Helpers of the fault-injection tests: run the CLI, kill it at chosen moments, compare outputs."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unet_core.cli import main

CLI = [sys.executable, "-m", "unet_core"]
#: One thread per subprocess: two cores are shared by the tests, and float sums must not depend on them.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def cli(capsys, *argv) -> tuple[int, str]:
    """Run ``unet-core argv`` in this process (what ``python -m unet_core`` runs); returns (code, stderr).

    An exception that escapes `unet_core.cli.main` fails the test: that would be a traceback for a user.
    """
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_user_error(code: int, stderr: str, stage: str, *fragments: str) -> str:
    """Exit code 2 and one ``unet-core <stage>: error: ...`` line holding every fragment (a regex)."""
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    line = errors[0]
    assert line.startswith(f"unet-core {stage}: error: "), line
    assert stderr.rstrip().endswith(line), stderr  # the error is the last thing the user sees
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert re.search(fragment, line), (fragment, line)
    return line


def leftovers(path: Path) -> list[str]:
    """Hidden temporary copies of ``path`` beside it (``.<name>.tmp-*``, ``.<name>.old-*``)."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(tmp|old)-")
    parent = path.parent
    return sorted(p.name for p in parent.iterdir() if pattern.match(p.name)) if parent.is_dir() else []


def assert_no_output(path: Path) -> None:
    """Nothing that a later run could mistake for a finished ``path``."""
    assert not path.exists(), f"{path} exists after a failure"
    assert not leftovers(path), leftovers(path)


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself) by relative name."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def tree_hash(*paths: Path) -> str:
    """One digest of names and bytes of every file under ``paths``."""
    digest = hashlib.sha256()
    for path in paths:
        for name, data in tree_bytes(path).items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


@contextmanager
def torch_threads(n: int):
    """Run in-process work with ``n`` torch threads, as the CLI's ``--threads n`` does."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class KillPoint:
    """One kill: the trigger waited for, the extra delay, and whether the process was still running."""

    trigger: str
    delay: float
    killed: bool
    seconds: float
    state: str = ""


def kill_during(
    argv: list[str],
    trigger: Callable[[], bool],
    *,
    name: str,
    delay: float,
    log: Path,
    state: Callable[[], str] = lambda: "",
    timeout: float = 300.0,
) -> KillPoint:
    """Start ``unet-core argv``, wait until ``trigger()`` holds, sleep ``delay`` s, then SIGKILL it.

    ``log`` receives its stdout and stderr (triggers may read it); ``state()`` describes what was on disk
    at the kill, for the record.
    """
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([*CLI, *map(str, argv)], stdout=out, stderr=subprocess.STDOUT, env=ENV)
    try:
        while proc.poll() is None and not trigger():
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{name} never happened within {timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.005)
        time.sleep(delay)
        killed = proc.poll() is None
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not killed and proc.returncode != 0:
        raise AssertionError(f"{argv[0]} failed before the kill: {log.read_text()[-3000:]}")
    return KillPoint(name, round(delay, 3), killed, round(time.monotonic() - start, 2), state())


def log_has(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.exists() and text in log.read_text(errors="replace")


def run_cli(*argv, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """``python -m unet_core argv`` in a subprocess, output captured."""
    result = subprocess.run(
        [*CLI, *map(str, argv)], capture_output=True, text=True, env=ENV, timeout=600, **kwargs
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def random_volume(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)
