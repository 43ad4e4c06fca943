"""The cluster path: the tiny workflow through a real SLURM (started by .ci/run), with jobs cancelled mid-run.

CI sets UNET_REQUIRE_SLURM=1, so a missing SLURM fails there instead of skipping.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from unet_core.checkpoint import load_checkpoint
from unet_core.profiles import install_profiles

from .test_workflow import ROOT, SNAKEMAKE, TINY

pytestmark = pytest.mark.slow  # real SLURM jobs and snakemake runs

if shutil.which("sbatch") is None:
    reason = "no sbatch: SLURM is not installed (.ci/run starts ../shared/tools/local-slurm.sh)"
    if os.environ.get("UNET_REQUIRE_SLURM") == "1":
        raise RuntimeError(reason + "; UNET_REQUIRE_SLURM=1 forbids skipping")
    print(f"\nskipping SLURM tests: {reason}", file=sys.stderr)
    pytest.skip(reason, allow_module_level=True)

ENV = {
    **os.environ,
    "UNET_SLURM_ACCOUNT": os.environ.get("UNET_SLURM_ACCOUNT", "ci"),
    "UNET_SLURM_PARTITION": os.environ.get("UNET_SLURM_PARTITION", "debug"),
    "UNET_SLURM_GPU_PARTITION": os.environ.get("UNET_SLURM_GPU_PARTITION", "debug"),
}
# This node has ~23 GB; a real cluster keeps the profile's larger requests.
SMALL_NODE = [
    "--set-resources", "train:mem_mb=3000", "predict_shard:mem_mb=3000", "evaluate:mem_mb=2000",
    "segment:mem_mb=2000", "report:mem_mb=2000", "prepare:mem_mb=2000",
]  # fmt: skip
CONFIG = {
    **TINY,
    "dataset": "cluster",
    "gpus_per_job": 1,  # the local cluster advertises one fake GPU: proves --gpus reaches sbatch
    # long enough that the watcher below can cancel jobs mid-run
    "train": {**TINY["train"], "iterations": 400, "val_every": 50},
    "predict": {"block_shape": [1, 16, 16]},
}


def _workdir(tmp_path: Path, name: str) -> Path:
    import numpy as np
    import tifffile

    workdir = tmp_path / name
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    extra = tmp_path / "extra.tif"
    if not extra.exists():
        volume = np.random.default_rng(1).integers(0, 255, (4, 256, 256)).astype(np.uint8)
        tifffile.imwrite(extra, volume, photometric="minisblack")
    (workdir / "config" / "volumes.tsv").write_text(f"name\tpath\nextra\t{extra}\n")
    return workdir


def _queued() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i|%k"], capture_output=True, text=True).stdout
    return {line.split("|")[0]: line.split("|")[1] for line in out.splitlines() if "|" in line}


def _sacct(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if line)


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Run on SLURM, cancelling the training job after its first checkpoint and a predict shard mid-way."""
    tmp_path = tmp_path_factory.mktemp("slurm")
    workdir = _workdir(tmp_path, "cluster")
    results = workdir / "results" / "cluster"
    log_path = tmp_path / "snakemake.log"  # a file, not a pipe: a full pipe would block snakemake
    proc = subprocess.Popen(
        [*SNAKEMAKE, "--directory", str(workdir), "--profile", str(ROOT / "profiles" / "slurm"),
         "--slurm-init-seconds-before-status-checks", "1", *SMALL_NODE],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, text=True, env=ENV,
    )  # fmt: skip
    triggers = {
        "rule_train": lambda: (results / "model" / ".work" / "last.pt").exists(),
        "rule_predict_shard_wildcards_extra": lambda: (
            len(list(results.glob("pred/.extra.ome.zarr.work/.done/*"))) >= 8
        ),
    }
    cancelled: dict[str, str] = {}
    deadline = time.time() + 1200
    while proc.poll() is None and time.time() < deadline:
        for job_id, comment in _queued().items():
            for prefix, ready in triggers.items():
                if comment.startswith(prefix) and prefix not in cancelled and ready():
                    subprocess.run(["scancel", job_id], check=True)
                    cancelled[prefix] = job_id
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)  # SIGTERM does not stop snakemake promptly
        subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--unlock"], env=ENV)
    returncode = proc.wait()
    output = log_path.read_text()
    assert returncode == 0, output[-5000:]
    return workdir, output, cancelled


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cluster_run):
    workdir = _workdir(cluster_run[0].parent, "local")
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def _submitted(output: str) -> list[tuple[str, str]]:
    """(rule, SLURM job id) of every submission in snakemake's log."""
    jobs = []
    for line in output.splitlines():
        if "has been submitted with SLURM jobid" in line:
            job_id = line.split("SLURM jobid ")[1].split()[0]
            rule = line.split("slurm_logs/rule_")[1].split("/")[0]
            jobs.append((rule, job_id))
    return jobs


def test_every_rule_instance_ran_as_a_completed_slurm_job(cluster_run):
    _, output, _ = cluster_run
    jobs = _submitted(output)
    states = _sacct([job_id for _, job_id in jobs])
    completed = [rule for rule, job_id in jobs if states.get(job_id) == "COMPLETED"]
    assert sorted(set(completed)) == [
        "evaluate",
        "export",
        "predict",
        "predict_shard",
        "prepare",
        "report",
        "segment",
        "train",
    ]
    assert completed.count("predict_shard") == 4  # 2 shards x 2 volumes
    assert completed.count("train") == 1 and completed.count("predict") == 2


def test_cancelled_jobs_were_retried_and_resumed(cluster_run):
    workdir, output, cancelled = cluster_run
    assert set(cancelled) == {"rule_train", "rule_predict_shard_wildcards_extra"}
    states = _sacct(list(cancelled.values()))
    assert all(state.startswith("CANCELLED") for state in states.values()), states
    logs = workdir / "logs" / "cluster"
    assert "resumed from" in (logs / "train.log").read_text()
    shard_logs = "".join(p.read_text() for p in (logs / "predict").glob("extra.*-of-2.log"))
    assert "chunks to do" in shard_logs


def test_gpu_jobs_asked_slurm_for_a_gpu(cluster_run):
    _, output, _ = cluster_run
    by_rule = {}
    for rule, job_id in _submitted(output):  # accounting does not track gres here: ask the controller
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        by_rule.setdefault(rule, []).append("gres:gpu:1" in shown)
    assert all(by_rule["train"]) and all(by_rule["predict_shard"])
    assert not any(by_rule["evaluate"]) and not any(by_rule["prepare"])


def _store_bytes(path: Path) -> dict:
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_cluster_results_equal_a_local_run(cluster_run, local_run):
    cluster = cluster_run[0] / "results" / "cluster"
    local = local_run / "results" / "cluster"
    a, b = load_checkpoint(cluster / "model" / "best.pt"), load_checkpoint(local / "model" / "best.pt")
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    for volume in ("heldout", "extra"):
        assert _store_bytes(cluster / "pred" / f"{volume}.ome.zarr") == _store_bytes(
            local / "pred" / f"{volume}.ome.zarr"
        )
    assert (cluster / "eval" / "metrics.csv").read_text() == (local / "eval" / "metrics.csv").read_text()


def test_every_gpu_rule_goes_to_the_gpu_partition_with_the_rules_memory(tmp_path):
    """Resources as the SLURM profile resolves them (dry run): ensemble members and cross-validation folds
    are rules of their own."""
    workdir = _workdir(tmp_path, "dry")
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    extra = {"ensemble": 2, "crossval": {"folds": 2}}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config | extra))
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--profile", str(ROOT / "profiles" / "slurm"), "-n"],
        capture_output=True, text=True, env={**ENV, "UNET_SLURM_GPU_PARTITION": "gpuq"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resources = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", result.stdout, re.M))
    gpu_rules = {"train", "train_member", "predict_shard", "train_fold", "train_fold_member", "predict_fold"}
    assert {"prepare", "segment", "evaluate", "report", "predict"} | gpu_rules <= set(resources)
    for rule, line in resources.items():
        partition = "gpuq" if rule in gpu_rules else "debug"
        assert f"slurm_partition={partition}" in line, (rule, line)
    for rule in ("train", "train_member", "train_fold", "train_fold_member"):
        assert "mem_mb=16000" in resources[rule] and "runtime=1440" in resources[rule], resources[rule]


def test_profile_name_works_after_the_setup_step(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config home"))
    linked = install_profiles(ROOT)
    assert {p.name for p in linked} == {"slurm", "local"}
    workdir = _workdir(tmp_path, "named")
    env = {**ENV, "XDG_CONFIG_HOME": str(tmp_path / "config home")}
    result = subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--profile", "slurm", "-n"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "predict_shard" in result.stdout
    with pytest.raises(ValueError, match="exists and is not a link"):
        (tmp_path / "config home" / "snakemake" / "slurm").unlink()
        (tmp_path / "config home" / "snakemake" / "slurm").mkdir()
        install_profiles(ROOT)
