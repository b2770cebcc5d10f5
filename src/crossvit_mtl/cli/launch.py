"""Where a sweep's jobs run: here, one after another or N at once as separate processes, or on a
SLURM cluster through submitit, one array job per run whose tasks are its seeds.

The settings are the sweep file's ``launcher:`` mapping, checked on load (unknown keys refused by
name). The SLURM path is submitit's (``SlurmExecutor``, ``executor.batch()`` for the arrays, its
checkpoint-and-requeue on the scheduler's signal, ``SlurmJob``'s state from ``sacct``); the local
pool is the standard library's ``ThreadPoolExecutor``, each thread waiting on one fit process.
Nothing here schedules by itself.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from crossvit_mtl.cli.args import UserError
from crossvit_mtl.cli.sweep_jobs import (
    SIGNAL_CALLBACK,
    SweepJob,
    finished,
    fit_args,
    job_file,
    process_start,
    record_state,
    record_submission,
)

LAUNCHERS = ("local", "slurm")
#: sbatch options submitit writes itself, from the settings or for its own files and signals
MANAGED_SBATCH = frozenset({"array", "output", "error", "open-mode", "job-name", "signal"})
#: what a fit on SLURM is given besides its config: the checkpoint on the scheduler's signal, and
#: Lightning's own SLURM requeue turned off so that submitit alone requeues
SLURM_FIT_OPTIONS = [f"--trainer.callbacks+={SIGNAL_CALLBACK}",
                     "--trainer.plugins+=lightning.pytorch.plugins.environments.SLURMEnvironment",
                     "--trainer.plugins.auto_requeue=false"]


@dataclass(frozen=True)
class LauncherSettings:
    """A sweep file's ``launcher:``; the SLURM keys are ignored by the local launcher."""
    name: str = "local"
    jobs: int = 1                      # local: fits at once, each a process with cores/jobs threads
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1            # one task per GPU for DDP across them (trainer.devices)
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time: str | int | None = None      # a job's time limit: minutes, or [D-]HH:MM[:SS]; required on SLURM
    array_parallelism: int | None = None   # seeds of a run at once (default: all)
    signal_delay_s: int = 120          # the warning signal comes this long before the time limit
    max_requeues: int = 3              # time limits a job may reach and be requeued (submitit's max_num_timeout)
    sbatch: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {exclude: node07}
    setup: list[str] = field(default_factory=list)        # shell lines run before the job (modules, venv)
    python: str | None = None          # the command that runs Python on the nodes (default: this interpreter)

    @property
    def time_min(self) -> int:
        return _minutes(self.time)

    def slurm_parameters(self) -> dict[str, Any]:
        """``SlurmExecutor.update_parameters`` arguments."""
        params: dict[str, Any] = dict(
            partition=self.partition, account=self.account, qos=self.qos, constraint=self.constraint,
            nodes=self.nodes, ntasks_per_node=self.tasks_per_node, gpus_per_node=self.gpus_per_node,
            cpus_per_task=self.cpus_per_task, time=self.time_min, signal_delay_s=self.signal_delay_s,
            setup=list(self.setup) or None, additional_parameters=dict(self.sbatch) or None, stderr_to_stdout=True)
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb)}GB" if self.mem_gb == int(self.mem_gb) else f"{int(self.mem_gb * 1024)}MB"
        if self.array_parallelism is not None:
            params["array_parallelism"] = self.array_parallelism
        return {k: v for k, v in params.items() if v is not None}

    def describe(self) -> str:
        """What the jobs ask for, in one line."""
        if self.name == "local":
            return (f"local: {self.jobs} fit(s) at once" + (", each a process of its own" if self.jobs > 1 else
                                                             ", one after another in this process"))
        params = self.slurm_parameters()
        asks = [f"{self.nodes} node(s) x {self.tasks_per_node} task(s)", f"{self.gpus_per_node or 0} GPU(s) a node",
                f"{self.cpus_per_task or 'default'} CPU(s) a task", f"memory {params.get('mem', 'default')}",
                f"time {self.time_min} min"]
        asks += [f"{key} {getattr(self, key)}" for key in ("partition", "account", "qos", "constraint") if getattr(self, key)]
        asks += [f"--{key}={value}" for key, value in self.sbatch.items()]
        return (f"SLURM: one array job per run, its seeds the tasks ({self.array_parallelism or 'all'} at once); "
                f"each job: {', '.join(asks)}; requeued after up to {self.max_requeues} time limits")


def _minutes(value: str | int | None) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in whole minutes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not match:
        raise ValueError
    days, a, b, c = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = ((int(days) * 24 + int(a)) * 60 + int(b or 0)) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = (int(a) * 60 + int(b)) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:
        seconds = int(a) * 60
    return -(-seconds // 60)


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_time(v: Any) -> bool:
    try:
        return not isinstance(v, bool) and _minutes(v) >= 1
    except ValueError:
        return False


#: key -> (check, what it must be)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: v in LAUNCHERS, f"one of {', '.join(LAUNCHERS)}"),
    "jobs": (lambda v: _is_int(v, 1), "an integer >= 1"),
    **{k: (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")
       for k in ("partition", "account", "qos", "constraint", "python")},
    **{k: (lambda v: _is_int(v, 1), "an integer >= 1")
       for k in ("nodes", "tasks_per_node", "cpus_per_task", "array_parallelism")},
    "gpus_per_node": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "mem_gb": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf"), "a number > 0"),
    "time": (_is_time, "minutes (an integer >= 1) or a SLURM time such as 12:00:00 or 1-00:00:00"),
    "signal_delay_s": (lambda v: _is_int(v, 10), "an integer >= 10 (seconds)"),
    "max_requeues": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "sbatch": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (str, int, float, bool))
                                                    for k, x in v.items()), "a mapping of sbatch options to values"),
    "setup": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of shell lines"),
}


def read_settings(value: Any, where: str) -> LauncherSettings:
    """The ``launcher:`` mapping of a sweep file (``where`` names it), or a one-line ``UserError``."""
    if value is None:
        return LauncherSettings()
    if not isinstance(value, dict):
        raise UserError(f"{where}: launcher must be a mapping (name: local|slurm, partition:, time:, ...), got {value!r}")
    known = [f.name for f in fields(LauncherSettings)]
    unknown = [k for k in value if k not in known]
    if unknown:
        raise UserError(f"{where}: launcher.{unknown[0]}: unknown key (known: {', '.join(known)})")
    for key, item in value.items():
        check, need = CHECKS[key]
        if item is not None and not check(item):
            raise UserError(f"{where}: launcher.{key} must be {need}, got {item!r}")
    managed = sorted(MANAGED_SBATCH & {k.replace("_", "-") for k in value.get("sbatch") or {}})
    if managed:
        raise UserError(f"{where}: launcher.sbatch.{managed[0]}: set by the launcher itself; leave it out")
    return LauncherSettings(**{k: v for k, v in value.items() if v is not None})


def chosen(settings: LauncherSettings, name: str | None, jobs: int | None, where: str) -> LauncherSettings:
    """The settings with the command line's ``--launcher`` and ``--jobs`` over the file's."""
    from dataclasses import replace

    settings = replace(settings, name=name or settings.name, jobs=jobs or settings.jobs)
    if jobs and settings.name != "local":
        raise UserError(f"--jobs: runs jobs at once on this machine (--launcher local); on {settings.name} "
                        "launcher.array_parallelism limits the seeds of a run at once")
    if settings.name == "slurm" and settings.time is None:
        raise UserError(f"{where}: launcher.time: a SLURM job's time limit is required (e.g. time: 12:00:00); "
                        "a job reaching it checkpoints and is requeued")
    return settings


def label(run: dict[str, Any]) -> str:
    return f"{run['name']} seed {run['seed']}" + (" (baseline)" if run.get("baseline") else "")


def command_line(run: dict[str, Any]) -> str:
    return shlex.join(["crossvit-mtl", *fit_args(run)])


# ---------------------------------------------------------------------------------------- local
def run_here(run: dict[str, Any], jobs_dir: Path) -> int:
    """The sweep of old: the fit in this process, its output on the terminal, its state recorded.
    A SIGTERM stops it after its step, checkpointed, and this process with it (exit code 75)."""
    from crossvit_mtl.cli.train import run_command

    record_submission(jobs_dir, run, "local", None, None)
    pid = os.getpid()
    record_state(jobs_dir, run, "running", host=socket.gethostname(), pid=pid, pid_start=process_start(pid),
                 started=time.time(), ended=None, exit_code=None, job_id=None, log=None)
    code: Any = None
    try:
        code = run_command([*fit_args(run), f"--trainer.callbacks+={SIGNAL_CALLBACK}"])
    except SystemExit as stop:
        code = stop.code
        raise
    finally:
        state = "done" if finished(run) else "interrupted" if code == os.EX_TEMPFAIL else "failed"
        record_state(jobs_dir, run, state, ended=time.time(), exit_code=code)
    return code


def run_pool(runs: list[dict[str, Any]], jobs_dir: Path, jobs: int) -> list[tuple[dict[str, Any], str]]:
    """``jobs`` fits at once, each a process of its own with cores/jobs threads, its output in
    ``{jobs_dir}/{name}-seed{seed}.log``; prints each as it ends. The failed ones and why."""
    threads = max(1, len(os.sched_getaffinity(0)) // jobs) if hasattr(os, "sched_getaffinity") else None
    work = []
    for run in runs:
        log = job_file(jobs_dir, run, ".log")
        record_submission(jobs_dir, run, "local", None, str(log))
        work.append((run, SweepJob(run, jobs_dir, [f"--trainer.callbacks+={SIGNAL_CALLBACK}"], log=log, threads=threads)))
    failed = []
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sweep-job") as pool:
        futures = {pool.submit(job): (run, job) for run, job in work}
        for future in as_completed(futures):
            run, job = futures[future]
            error = future.exception()
            print(f"{label(run)}: {'failed: ' + str(error) if error else 'done'} (log: {job.log})", flush=True)
            if error:
                failed.append((run, str(error)))
    return failed


# ---------------------------------------------------------------------------------------- SLURM
def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'crossvit-mtl[cluster]'") from None
    return submitit


def submit_slurm(runs: list[dict[str, Any]], jobs_dir: Path, settings: LauncherSettings,
                 sweep_name: str) -> list[tuple[str, list[str]]]:
    """One array job per run, its seeds the tasks (a single seed: a plain job); every job's id and
    log recorded. Returns (run name, job ids) in submission order."""
    submitit = _submitit()
    try:
        executor = submitit.SlurmExecutor(folder=jobs_dir / "slurm", max_num_timeout=settings.max_requeues,
                                          python=settings.python)
    except RuntimeError as err:  # no srun on PATH
        raise UserError(f"--launcher slurm: {err} (run the sweep where sbatch and srun are)") from None
    grace = max(10.0, settings.signal_delay_s - 30.0)
    submitted = []
    for name in dict.fromkeys(r["name"] for r in runs):
        group = [r for r in runs if r["name"] == name]
        executor.update_parameters(job_name=f"{sweep_name}.{name}", **settings.slurm_parameters())
        try:
            with executor.batch():
                jobs = [executor.submit(SweepJob(run, jobs_dir, SLURM_FIT_OPTIONS, grace_s=grace)) for run in group]
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as err:
            raise UserError(f"--launcher slurm: submitting run {name!r} failed: {' '.join(str(err).split())}") from None
        for run, job in zip(group, jobs):
            record_submission(jobs_dir, run, "slurm", job.job_id, str(job.paths.stdout))
        submitted.append((name, [job.job_id for job in jobs]))
    return submitted


def slurm_states(job_ids: list[str]) -> dict[str, str | None]:
    """Each job's SLURM state from ``sacct`` (submitit's ``SlurmJob`` watcher), then from
    ``squeue -r`` for jobs sacct does not list (accounting lags, or is off): None for a job
    neither knows. Jobs are absent when neither command is there to ask."""
    if not job_ids or not (shutil.which("sacct") or shutil.which("squeue")):
        return {}
    states: dict[str, str | None] = dict.fromkeys(job_ids)
    if shutil.which("sacct"):
        try:
            from submitit import SlurmJob
        except ImportError:
            pass
        else:
            SlurmJob.watcher.clear()  # a status is a fresh look, not submitit's cache of finished jobs
            for job_id in job_ids:
                SlurmJob.watcher.register_job(job_id)
            SlurmJob.watcher.update()
            for job_id in job_ids:
                state = SlurmJob.watcher.get_state(job_id, mode="cache")
                states[job_id] = None if state == "UNKNOWN" else state.split()[0]  # "CANCELLED by 1234"
    unknown = [j for j, s in states.items() if s is None]
    if unknown and shutil.which("squeue"):
        ids = sorted({j.split("_")[0] for j in unknown})
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(ids)], capture_output=True,
                                 text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        for line in out.splitlines():
            job_id, _, state = line.strip().partition("|")
            if job_id in states and state:
                states[job_id] = state.split()[0]
    return states
