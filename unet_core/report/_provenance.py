"""What a reader needs to rerun the numbers: config, code version, packages, inputs, machine, timings."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from ..parallel import usable_cpus

log = logging.getLogger(__name__)

#: Distributions whose versions change results or their speed.
PACKAGES = (
    "unet-core",
    "torch",
    "numpy",
    "scipy",
    "scikit-image",
    "numba",
    "zarr",
    "numcodecs",
    "pandas",
    "tifffile",
    "h5py",
    "matplotlib",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)
#: Stores up to this many bytes are hashed by content; larger ones by metadata and chunk sizes.
MAX_CONTENT_BYTES = 1 << 30
_ZARR_METADATA = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
_IGNORED = {".snakemake_timestamp"}  # Snakemake's marker in directory outputs: not data
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _store_files(root: Path) -> list[Path]:
    files = [Path(d) / name for d, _, names in os.walk(root) for name in names if name not in _IGNORED]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix())


def store_digest(path: str | os.PathLike, *, max_content_bytes: int = MAX_CONTENT_BYTES) -> dict:
    """A SHA-256 fingerprint of a directory store (Zarr, OME-Zarr), by content when small enough.

    Parameters
    ----------
    path : str or path-like
        The store's root directory.
    max_content_bytes : int, optional
        Stores whose files sum to at most this many bytes are hashed by content; larger ones by
        their Zarr metadata documents and the names and sizes of all other files.

    Returns
    -------
    dict
        ``sha256``, ``mode`` (``"content"`` or ``"metadata+sizes"``), ``files`` and ``bytes``.

    Raises
    ------
    ValueError
        If ``path`` is not a directory.

    Notes
    -----
    Files are taken in order of their POSIX path relative to the root (Snakemake's
    ``.snakemake_timestamp`` left out). For each, the line ``<relpath> NUL <size> NUL <h> LF``
    enters the digest, where ``h`` is the file's own SHA-256 in ``content`` mode, and in
    ``metadata+sizes`` mode the SHA-256 of Zarr metadata files (``zarr.json``, ``.zarray``,
    ``.zattrs``, ``.zgroup``, ``.zmetadata``) and ``-`` for chunks. The second mode costs one
    ``stat`` per chunk instead of reading terabytes; two stores with equal metadata and chunk
    sizes but different bytes would share it, so the mode is recorded beside the digest.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"store_digest: path must be a directory store, got {os.fspath(path)!r}")
    files = _store_files(root)
    sizes = [f.stat().st_size for f in files]
    by_content = sum(sizes) <= max_content_bytes
    digest = hashlib.sha256()
    for file, size in zip(files, sizes, strict=True):
        own = sha256_file(file) if by_content or file.name in _ZARR_METADATA else "-"
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0{own}\n".encode())
    mode = "content" if by_content else "metadata+sizes"
    return {"sha256": digest.hexdigest(), "mode": mode, "files": len(files), "bytes": sum(sizes)}


def input_checksums(paths: Mapping[str, str | os.PathLike], **options) -> dict[str, dict]:
    """``{name: {path, sha256, ...}}`` for files (:func:`sha256_file`) and stores (:func:`store_digest`).

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    """
    checksums = {}
    for name, path in paths.items():
        p = Path(path)
        if p.is_dir():
            checksums[name] = {"path": os.fspath(path), **store_digest(p, **options)}
        elif p.is_file():
            checksums[name] = {"path": os.fspath(path), "sha256": sha256_file(p), "bytes": p.stat().st_size}
        else:
            raise FileNotFoundError(f"input {name!r}: no such file or directory: {os.fspath(path)!r}")
    return checksums


def git_state(directory: str | os.PathLike | None) -> dict:
    """Commit and dirty flag of the git repository holding ``directory``; ``None`` values without git.

    ``dirty`` counts changes to tracked files; ``untracked`` counts files git does not know (ignored
    ones, such as results, are not counted).
    """
    state: dict = {"directory": None if directory is None else os.fspath(directory), "commit": None}
    state.update(dirty=None, untracked=None, error=None)
    if directory is None:
        state["error"] = "no repository directory given"
        return state
    try:
        commit = _git(directory, "rev-parse", "HEAD")
        status = _git(directory, "status", "--porcelain").splitlines()
    except (OSError, subprocess.CalledProcessError) as err:
        message = getattr(err, "stderr", None) or str(err)
        state["error"] = message.strip()
        log.warning("no git state for %s: %s", directory, state["error"])
        return state
    state.update(
        commit=commit.strip(),
        dirty=any(not line.startswith("??") for line in status),
        untracked=sum(line.startswith("??") for line in status),
    )
    return state


def _git(directory: str | os.PathLike, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", os.fspath(directory), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when it is not installed), and Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _meminfo_bytes(text: str) -> int | None:
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _cpu_model(text: str) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Hardware", "cpu model"):
            return value.strip()
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def hardware() -> dict:
    """CPU model, logical and usable cores, RAM and CUDA GPUs of the machine building the report.

    On a cluster, training and prediction may have run elsewhere: their benchmark files time them,
    this records where the report was built.
    """
    info = {
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpu_model": _cpu_model(_read("/proc/cpuinfo")) or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable_cpus(),
        "ram_bytes": _meminfo_bytes(_read("/proc/meminfo")),
        "gpus": [],
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
    except ImportError:
        info["gpus"] = None
    return info


def benchmark_times(
    logs: str | os.PathLike | None, only: Iterable[str | os.PathLike] | None = None
) -> dict[str, dict]:
    """Wall time (``s``), CPU time and peak RSS of each job, from Snakemake's ``*.benchmark.tsv``.

    Parameters
    ----------
    logs : str or path-like or None
        The dataset's log folder; benchmark files anywhere below it are read, and a job is
        named by its path without the suffix (``train``, ``predict/heldout``).
    only : iterable of path-like, optional
        Read only these of them (the jobs of the current configuration: runs with other shard counts,
        volumes or ensemble members leave theirs behind).

    Returns
    -------
    dict
        ``{job: {"s": seconds, "cpu_time": seconds, "max_rss_mb": MB}}``, the mean over repeats
        (``--benchmark-repeats``); empty when ``logs`` is None or holds no benchmark.
    """
    if logs is None or not Path(logs).is_dir():
        return {}
    times = {}
    paths = sorted(Path(logs).rglob("*.benchmark.tsv"))
    if only is not None:
        wanted = {Path(p).resolve() for p in only}
        paths = [p for p in paths if p.resolve() in wanted]
    for path in paths:
        frame = pd.read_csv(path, sep="\t")
        if "s" not in frame.columns or frame.empty:
            log.warning("%s: not a Snakemake benchmark file (no column 's'); left out", path)
            continue
        job = path.relative_to(logs).as_posix().removesuffix(".benchmark.tsv")
        row = {"s": float(frame["s"].mean())}
        for column, key in (("cpu_time", "cpu_time"), ("max_rss", "max_rss_mb")):
            if column in frame.columns:
                row[key] = float(pd.to_numeric(frame[column], errors="coerce").mean())
        times[job] = row
    return times


def rule_times(jobs: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Seconds per rule: :func:`benchmark_times` summed by rule (job ``predict/a.0-of-2`` -> ``predict``)."""
    totals: dict[str, float] = {}
    for job, times in jobs.items():
        rule = job.split("/", 1)[0]
        totals[rule] = totals.get(rule, 0.0) + times["s"]
    return totals


def find_seeds(config: Mapping, prefix: str = "") -> dict[str, object]:
    """Every ``*seed`` key of a nested config, as ``{"section.key": value}``."""
    seeds: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            seeds.update(find_seeds(value, prefix=f"{name}."))
        elif str(key).endswith("seed"):
            seeds[name] = value
    return seeds


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no spaces: equal configs give equal text, hence equal SHA-256."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def provenance(
    *,
    config: Mapping | None,
    config_files: Iterable[str | os.PathLike] = (),
    repo: str | os.PathLike | None = None,
    inputs: Mapping[str, str | os.PathLike] | None = None,
    logs: str | os.PathLike | None = None,
    benchmarks: Iterable[str | os.PathLike] | None = None,
    max_content_bytes: int = MAX_CONTENT_BYTES,
) -> dict:
    """Everything ``provenance.json`` records, as a JSON-serialisable dict.

    Parameters
    ----------
    config : mapping or None
        The configuration the workflow ran with (after defaults and ``--config`` overrides).
    config_files : iterable of path-like, optional
        The config files it was read from (Snakemake's ``workflow.configfiles``).
    repo : path-like, optional
        A directory inside the git repository holding the workflow.
    inputs : mapping, optional
        ``{name: path}`` of the report's inputs, files or directory stores.
    logs : path-like, optional
        The dataset's log folder with Snakemake benchmark files.
    benchmarks : iterable of path-like, optional
        Only these benchmark files count (:func:`benchmark_times`).
    max_content_bytes : int, optional
        Stores larger than this are fingerprinted by metadata and sizes (:func:`store_digest`).

    Returns
    -------
    dict
        Keys ``created_utc``, ``config``, ``config_sha256``, ``config_files``, ``git``,
        ``packages``, ``seeds``, ``inputs``, ``hardware``, ``wall_time_per_job`` and ``wall_time_per_rule_s``.

    Raises
    ------
    FileNotFoundError
        If a config file or input does not exist.
    """
    files, seen = {}, set()
    for path in config_files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {os.fspath(path)!r} does not exist")
        resolved = Path(path).resolve()
        if resolved not in seen:  # snakemake may list a file twice, relative and absolute
            seen.add(resolved)
            files[os.fspath(path)] = sha256_file(path)
    jobs = benchmark_times(logs, benchmarks)
    return {
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config,
        "config_sha256": None
        if config is None
        else hashlib.sha256(canonical_json(config).encode()).hexdigest(),
        "config_files": files,
        "git": git_state(repo),
        "packages": package_versions(),
        "seeds": find_seeds(config or {}),
        "inputs": input_checksums(inputs or {}, max_content_bytes=max_content_bytes),
        "hardware": hardware(),
        "wall_time_per_job": jobs,
        "wall_time_per_rule_s": rule_times(jobs),
    }
