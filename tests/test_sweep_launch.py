"""Sweeps as jobs: N local fits at once as separate processes, SLURM through submitit (against the
fake scheduler of ``fake_slurm``: the scripts it is given, run as SLURM runs them), every config
checked before the first job, status from the jobs' files and the scheduler, and jobs stopped
mid-run (the time-limit signal, a cancelled job) resuming to the weights of an uninterrupted run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import fake_slurm
from crossvit_mtl.cli import main
from crossvit_mtl.cli.args import UserError
from crossvit_mtl.cli.launch import LauncherSettings, _minutes, read_settings
from fixtures_run import tiny_config

#: the tiny run, segmentation only: 16 steps an epoch of 32 scenes, a checkpoint every 2 steps
BASE = tiny_config(model={"scheduler": "none"},
                   data={"options": {"length": 32, "height": 32, "width": 64}, "tasks": ["segmentation"]},
                   trainer={"max_steps": None, "max_epochs": 2, "logger": False, "log_every_n_steps": None},
                   checkpoint_every_n_steps=2)
RUNS = {"seg": {"baseline": True, "seeds": [0]}, "lr2": {"seeds": [0], "model": {"lr": 2e-3}}}
SLURM = {"name": "slurm", "partition": "gpu", "account": "proj", "gpus_per_node": 1, "cpus_per_task": 2, "mem_gb": 4,
         "time": "0:30:00", "array_parallelism": 2, "sbatch": {"exclude": "node07"},
         "setup": ["export SWEEP_SETUP=ran"]}


def write_sweep(tmp_path: Path, runs=None, launcher=None, **base) -> str:
    spec = {"sweep_dir": str(tmp_path / "sweep"), "base": {**BASE, **base}, "runs": runs or RUNS}
    if launcher:
        spec["launcher"] = launcher
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(tmp_path / "sweep.yaml")


def wait_for(predicate, what: str, timeout: float = 900.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
    return value


def step_of(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return -1


def state(tmp_path: Path, name: str, seed: int) -> dict:
    return json.loads((tmp_path / "sweep" / "jobs" / f"{name}-seed{seed}.state.json").read_text())


@pytest.fixture
def clean_env(monkeypatch):
    """Jobs start from this process's environment: nothing an earlier test left (Lightning's seed,
    torch.distributed's ranks) reaches them, and each fit uses one thread."""
    for key in [k for k in os.environ if k.startswith(("PL_", "SLURM_"))] + [
            "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                                    os.environ.get("PYTHONPATH")])))


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch, clean_env):
    for key, value in fake_slurm.install(tmp_path / "bin", tmp_path / "cluster").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield tmp_path / "cluster"
    unfinished = [t for t, record in fake_slurm.tasks().items() if record["state"] not in fake_slurm.FINAL]
    if unfinished:  # a failed test leaves no job running
        subprocess.run(["scancel", *unfinished], check=False)


# --------------------------------------------------------------------------------------- local
@pytest.mark.heavy
def test_local_jobs_run_side_by_side_as_separate_processes_then_compare(tmp_path, clean_env, capsys):
    config = write_sweep(tmp_path, trainer={**BASE["trainer"], "max_epochs": None, "max_steps": 4})
    assert main(["sweep", config, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    a, b = state(tmp_path, "seg", 0), state(tmp_path, "lr2", 0)
    assert a["state"] == b["state"] == "done" and a["exit_code"] == b["exit_code"] == 0
    assert len({a["pid"], b["pid"], os.getpid()}) == 3  # two processes of their own
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # each alive while the other was
    for name in ("seg", "lr2"):
        log = tmp_path / "sweep" / "jobs" / f"{name}-seed0.log"
        assert f"{name} seed 0{' (baseline)' if name == 'seg' else ''}: done (log: {log})" in out
        assert "metrics_test.json" in log.read_text()  # the fit's own output went to its log
    groups = json.loads((tmp_path / "sweep" / "compare.json").read_text())["groups"]
    assert [(g["name"], g["baseline"]) for g in groups] == [("seg", True), ("lr2", False)]
    assert "Δm metrics (%)" in out
    assert main(["sweep", config, "--status"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 done, 0 running, 0 queued, 0 failed, 0 missing"


# ---------------------------------------------------------------------------------------- SLURM
@pytest.mark.heavy
def test_slurm_array_jobs_requeue_on_the_signal_and_resubmit_only_the_cancelled(tmp_path, fake_cluster, capsys):
    config = write_sweep(tmp_path, {**RUNS, "lr2": {"seeds": [0, 1], "model": {"lr": 2e-3}}}, SLURM)
    sweep = tmp_path / "sweep"
    assert main(["sweep", config, "--runs", "lr2"]) == 0
    out = capsys.readouterr().out
    assert "lr2: SLURM array job 100, seeds 0 1" in out and "not finished" in out
    script = (fake_cluster / "submitted" / "100.sh").read_text()
    sbatch = set(re.findall(r"^#SBATCH (.*)$", script, re.M))
    assert {"--partition=gpu", "--account=proj", "--gpus-per-node=1", "--cpus-per-task=2", "--mem=4GB",
            "--time=30", "--array=0-1%2", "--signal=USR2@120", "--exclude=node07", "--job-name=sweep.lr2",
            "--nodes=1", "--ntasks-per-node=1"} <= sbatch
    assert "export SWEEP_SETUP=ran" in script and "srun" in script

    # seed 0 gets the time-limit signal, seed 1 is cancelled: each once a mid-epoch checkpoint exists
    last = {seed: sweep / "lr2" / f"seed{seed}" / "checkpoints" / "last.ckpt" for seed in (0, 1)}
    actions = {0: ["scancel", "100_0", "--signal", "USR2"], 1: ["scancel", "100_1"]}
    cancelled_at = None

    def stop_each_once_checkpointed() -> bool:
        nonlocal cancelled_at
        for seed in list(actions):
            assert fake_slurm.tasks()[f"100_{seed}"]["state"] not in fake_slurm.FINAL, "it ended before it was stopped"
            if last[seed].exists():  # written whole (renamed into place) at step 2 first
                subprocess.run(actions.pop(seed), check=True)
                if seed == 1:
                    cancelled_at = step_of(last[seed])
        return not actions

    wait_for(stop_each_once_checkpointed, "mid-run checkpoints")
    wait_for(lambda: fake_slurm.tasks()["100_1"]["state"] == "CANCELLED", "the cancelled job")
    assert main(["sweep", config, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0] == "seg seed 0 (baseline): missing (never submitted)"
    assert re.match(r"lr2 seed 0: (running|queued|done) \[job 100_0\]", status[1]), status[1]  # requeued meanwhile
    assert status[2] == (f"lr2 seed 1: failed [job 100_1] (SLURM job 100_1 CANCELLED); "
                         f"log: {sweep}/jobs/slurm/100_1_0_log.out")

    # a new sweep submits the cancelled job alone (one seed: a plain job), which resumes
    assert main(["sweep", config, "--runs", "lr2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^lr2 seed 0: (running|queued) \(SLURM job 100_0 \w+\), not submitted again$|"
                     r"^lr2 seed 0: finished, skipped", out, re.M), out
    assert "lr2: SLURM job 101, seed 1" in out and "--ckpt_path last" in out.split("lr2 seed 1: ")[1].splitlines()[0]
    assert "--array" not in (fake_cluster / "submitted" / "101.sh").read_text()
    assert sorted(p.name for p in (fake_cluster / "submitted").iterdir()) == ["100.sh", "101.sh"]

    # meanwhile, uninterrupted fits of the same config and seeds, here
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in (0, 1):
            assert main(["fit", "--config", str(sweep / "configs" / "lr2.yaml"), "--seed_everything", str(seed),
                         "--run_dir", str(tmp_path / "whole" / f"seed{seed}")]) == 0
    finally:
        torch.set_num_threads(torch_threads)
    capsys.readouterr()
    wait_for(lambda: all(fake_slurm.tasks()[t]["state"] in fake_slurm.FINAL for t in ("100_0", "101")), "the jobs")
    assert fake_slurm.tasks()["100_0"] == {**fake_slurm.tasks()["100_0"], "state": "COMPLETED", "restarts": 1}
    assert fake_slurm.tasks()["101"]["state"] == "COMPLETED"  # submitit requeued 100_0 on its own, once
    assert main(["sweep", config, "--status"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[1:] == [f"lr2 seed 0: done [job 100_0]; log: {sweep}/jobs/slurm/100_0_0_log.out",
                          f"lr2 seed 1: done [job 101]; log: {sweep}/jobs/slurm/101_0_log.out",
                          "2 done, 0 running, 0 queued, 0 failed, 1 missing"]
    log0 = (sweep / "jobs" / "slurm" / "100_0_0_log.out").read_text()
    stopped_at = int(re.search(r"SIGUSR2: stopped after step (\d+), checkpoint", log0).group(1))
    assert all(0 < step < 32 and step % 16 for step in (stopped_at, cancelled_at)), (stopped_at, cancelled_at)

    # both end with the weights of the uninterrupted fits
    for seed in (0, 1):
        whole = torch.load(tmp_path / "whole" / f"seed{seed}" / "checkpoints" / "last.ckpt", weights_only=True)
        again = torch.load(last[seed], weights_only=True)
        assert whole["global_step"] == again["global_step"] == 32
        assert whole["state_dict"].keys() == again["state_dict"].keys()
        for key, value in whole["state_dict"].items():
            assert torch.equal(value, again["state_dict"][key]), (seed, key)


# ------------------------------------------------------------------------------ fail fast, status
@pytest.mark.parametrize("change, message, launchers", [
    ({"model": {"weightingg": "ew"}}, r"Group 'model' does not accept option 'weightingg'", (None, SLURM)),
    ({"model": {"lr": -1.0}}, r'Parser key "model\.lr": Not of type PositiveFiniteFloat: -1\.0 does not conform', (None,)),
    ({"data": {"tasks": ["segmentation", "deph"]}}, r"tasks: 'deph' is not a task", (None,)),
    ({"data": {"root": "no/such/data", "options": None}}, r"no/such/data: cache folder not found", (SLURM,)),
])
def test_a_bad_last_run_stops_the_sweep_before_anything_runs(tmp_path, fake_cluster, capsys, change, message, launchers):
    runs = {**RUNS, "ew": {}, "last": change}
    for launcher in launchers:
        config = write_sweep(tmp_path, runs, launcher)
        assert main(["sweep", config]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(rf"^crossvit-mtl sweep: error: CONFIG \S+/sweep\.yaml: run 'last': {message}",
                                                        err), err
        assert not (tmp_path / "sweep").exists() and not (fake_cluster / "submitted").exists()


def test_status_from_the_jobs_files_and_resubmission_of_the_failed_and_missing(tmp_path, clean_env, capsys):
    runs = {"seg": {"baseline": True, "seeds": [0, 1, 2]}, "lr2": {"seeds": [0, 1, 2], "model": {"lr": 2e-3}}}
    config = write_sweep(tmp_path, runs)
    jobs, sweep = tmp_path / "sweep" / "jobs", tmp_path / "sweep"
    jobs.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        from crossvit_mtl.cli.sweep_jobs import process_start

        def record(name, seed, state=None, pid=None, **fields):
            (jobs / f"{name}-seed{seed}.json").write_text(json.dumps(
                {"launcher": "local", "job_id": None, "log": str(jobs / f"{name}-seed{seed}.log"), "host": os.uname().nodename,
                 "submitter_pid": 1 << 22, "submitter_start": None}))
            if state:
                (jobs / f"{name}-seed{seed}.state.json").write_text(json.dumps(
                    {"state": state, "pid": pid, "pid_start": pid and process_start(pid), "host": os.uname().nodename,
                     "ended": None, **fields}))

        (sweep / "seg" / "seed0").mkdir(parents=True)
        (sweep / "seg" / "seed0" / "metrics_test.json").write_text("{}")  # done
        record("seg", 1, "failed", 123, ended=1.0, exit_code=1)           # its fit failed
        record("seg", 2, "running", sleeper.pid)                           # running (a live process)
        record("lr2", 0, "running", 1 << 22)                               # its process is gone: killed
        record("lr2", 1)                                                   # its sweep stopped before it started
        assert main(["sweep", config, "--status"]) == 0                    # lr2 seed 2: never submitted
        lines = capsys.readouterr().out.splitlines()
        assert lines == [
            "seg seed 0 (baseline): done",
            f"seg seed 1 (baseline): failed (fit failed, exit code 1); log: {jobs}/seg-seed1.log",
            f"seg seed 2 (baseline): running (pid {sleeper.pid} on {os.uname().nodename}); log: {jobs}/seg-seed2.log",
            f"lr2 seed 0: failed (pid {1 << 22} ended without a result (killed?)); log: {jobs}/lr2-seed0.log",
            f"lr2 seed 1: missing (its sweep stopped before it started); log: {jobs}/lr2-seed1.log",
            "lr2 seed 2: missing (never submitted)",
            "1 done, 1 running, 0 queued, 2 failed, 2 missing"]
        assert main(["sweep", config, "--dry-run"]) == 0  # what a new sweep would run: the failed and missing
        planned = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if ": crossvit-mtl fit" in line]
        assert planned == ["seg seed 1 (baseline)", "lr2 seed 0", "lr2 seed 1", "lr2 seed 2"]
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------------------- the settings
def test_launcher_settings_are_checked_on_load(tmp_path, capsys):
    assert read_settings(None, "x") == LauncherSettings()
    settings = read_settings(SLURM, "x")
    assert settings.time_min == 30 and settings.slurm_parameters()["mem"] == "4GB"
    assert [_minutes(t) for t in (90, "90", "1:30", "2:00:00", "1-0", "1-2:30", "0:0:61")] == [90, 90, 2, 120, 1440, 1590, 2]
    for bad, message in [({"partiton": "gpu"}, r"launcher\.partiton: unknown key \(known: name, jobs, partition"),
                         ({"name": "ray"}, r"launcher\.name must be one of local, slurm, got 'ray'"),
                         ({"time": "12h"}, r"launcher\.time must be minutes"),
                         ({"gpus_per_node": -1}, r"launcher\.gpus_per_node must be an integer >= 0"),
                         ({"sbatch": {"array": "0-3"}}, r"launcher\.sbatch\.array: set by the launcher itself"),
                         ("slurm", r"launcher must be a mapping")]:
        with pytest.raises(UserError, match=message):
            read_settings(bad, "x")
    config = write_sweep(tmp_path, launcher={"name": "slurm"})
    assert main(["sweep", config, "--dry-run"]) == 2
    assert "launcher.time: a SLURM job's time limit is required" in capsys.readouterr().err
    assert main(["sweep", config, "--launcher", "local", "--jobs", "2", "--dry-run"]) == 0
    assert main(["sweep", write_sweep(tmp_path, launcher=SLURM), "--jobs", "2", "--dry-run"]) == 2
    assert "--jobs: runs jobs at once on this machine" in capsys.readouterr().err
