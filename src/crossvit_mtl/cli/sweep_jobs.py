"""One (run, seed) of a sweep as a job: its `fit`, the files it leaves in ``{sweep_dir}/jobs/`` and
its status read back from them.

Whoever submits a job writes ``{name}-seed{seed}.json`` (launcher, scheduler job id, log); the job
writes ``{name}-seed{seed}.state.json`` when its fit starts and when it ends (host, pid, exit
code). Two files, each with one writer, so a job that starts before its submitter has written
does not lose its state. The run folder's ``metrics_test.json`` alone says a run is done.

``SweepJob`` runs the fit as a child process (``python -m crossvit_mtl fit``): the job's own
process stays free to answer the scheduler's signals, which submitit handles there, and the
child handles them at a step boundary (``crossvit_mtl.engine.preemption``). This module is
unpickled on the cluster's nodes: it imports neither torch nor Lightning nor submitit at load.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the callback a launched fit runs with: the scheduler's signal -> checkpoint at a step boundary
SIGNAL_CALLBACK = "crossvit_mtl.engine.preemption.CheckpointOnSignal"


def fit_args(run: dict[str, Any]) -> list[str]:
    """The `fit` of one run and seed; it resumes a run folder left with a last checkpoint."""
    run_dir = Path(run["run_dir"])
    args = ["fit", "--config", str(run["config_path"]), "--run_dir", str(run_dir),
            "--seed_everything", str(run["seed"]), "--test_after_fit", "true"]
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        args += ["--ckpt_path", "last"]
    elif run_dir.exists():
        args += ["--overwrite", "true"]
    return args


def finished(run: dict[str, Any]) -> bool:
    return (Path(run["run_dir"]) / "metrics_test.json").is_file()


def job_file(jobs_dir: str | Path, run: dict[str, Any], suffix: str) -> Path:
    """``{jobs_dir}/{name}-seed{seed}{suffix}``: ``.json`` (submission), ``.state.json``, ``.log``."""
    return Path(jobs_dir) / f"{run['name']}-seed{run['seed']}{suffix}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replaced whole (a temporary file renamed into place): a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (``/proc``), so that a pid taken again by another process is not
    mistaken for the job; None without /proc or without the process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, start: str | None) -> bool:
    if Path("/proc/self/stat").exists():
        return start is not None and process_start(pid) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_submission(jobs_dir: str | Path, run: dict[str, Any], launcher: str, job_id: str | None,
                      log: str | None) -> None:
    """What the submitter knows of a job: written once it has an id; a resubmission replaces it."""
    pid = os.getpid()
    write_json(job_file(jobs_dir, run, ".json"), {
        "name": run["name"], "seed": run["seed"], "launcher": launcher, "job_id": job_id, "log": log,
        "submitted": time.time(), "host": socket.gethostname(), "submitter_pid": pid,
        "submitter_start": process_start(pid)})


def forget(jobs_dir: str | Path, run: dict[str, Any]) -> None:
    """Before a resubmission: the ended job's records go, its log stays (the new job appends)."""
    for suffix in (".json", ".state.json"):
        job_file(jobs_dir, run, suffix).unlink(missing_ok=True)


def record_state(jobs_dir: str | Path, run: dict[str, Any], state: str, **fields: Any) -> None:
    path = job_file(jobs_dir, run, ".state.json")
    write_json(path, {**(read_json(path) or {}), "state": state, **fields})


class SweepJob:
    """The callable a launcher runs for one (run, seed): the fit in a child process, its state in
    the sweep folder. Raises when the fit does not finish, so the scheduler counts the job failed.

    ``log`` (local jobs) takes the fit's output; without it the output is the job's own (submitit's
    log on a cluster). ``threads`` sets ``OMP_NUM_THREADS`` for jobs that share a machine.
    ``grace_s`` is how long ``checkpoint`` waits for the fit to write its checkpoint and exit."""

    def __init__(self, run: dict[str, Any], jobs_dir: str | Path, fit_options: list[str] | None = None,
                 log: str | Path | None = None, threads: int | None = None, grace_s: float = 60.0):
        self.run = {"name": run["name"], "seed": run["seed"], "config_path": str(run["config_path"]),
                    "run_dir": str(run["run_dir"])}
        self.jobs_dir = str(jobs_dir)
        self.fit_options = list(fit_options or [])
        self.log = None if log is None else str(log)
        self.threads = threads
        self.grace_s = grace_s
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}  # a requeued job starts its own fit

    def command(self) -> list[str]:
        return [sys.executable, "-m", "crossvit_mtl", *fit_args(self.run), *self.fit_options]

    def __call__(self) -> str:
        rank = int(os.environ.get("SLURM_PROCID", "0"))  # one task of a multi-task job writes the state
        env = dict(os.environ)
        if self.threads and "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(self.threads)
        log = open(self.log, "ab") if self.log else None  # noqa: SIM115 (closed below, after the wait)
        try:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT if log else None, env=env)
            if rank == 0:
                record_state(self.jobs_dir, self.run, "running", host=socket.gethostname(), pid=self._proc.pid,
                             pid_start=process_start(self._proc.pid), started=time.time(), ended=None,
                             exit_code=None, job_id=_scheduler_job_id(), log=self.log)
            try:
                code = self._proc.wait()
            except BaseException as err:  # submitit's requeue (SystemExit) or its refusal, raised by its signal handler
                if rank == 0:
                    record_state(self.jobs_dir, self.run, "requeued" if isinstance(err, SystemExit) else "failed",
                                 ended=time.time(), exit_code=self._proc.returncode)
                raise
        finally:
            if log:
                log.close()
        state = "done" if finished(self.run) else "interrupted" if code == os.EX_TEMPFAIL else "failed"
        if rank == 0:
            record_state(self.jobs_dir, self.run, state, ended=time.time(), exit_code=code)
        if state != "done":
            raise RuntimeError(f"run {self.run['name']!r} seed {self.run['seed']}: fit {state} (exit code {code})")
        return state

    def checkpoint(self) -> Any:
        """submitit's hook on the scheduler's signal (time limit near, or preemption): the fit, which
        got the signal too, writes its checkpoint at the end of its step and exits; the job is then
        requeued with a fresh copy of itself, whose fit resumes from that checkpoint."""
        from submitit.helpers import DelayedSubmission

        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"])
            if _wait(proc, self.grace_s) is None:
                proc.kill()  # the last checkpoint on disk is whole (written atomically); it resumes from there
                _wait(proc, 30.0)
        if finished(self.run):
            return None  # nothing left to run: submitit does not requeue
        return DelayedSubmission(self)


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """The child's exit code within ``timeout`` s, else None. Called from a signal handler that
    interrupted ``proc.wait()``, which holds Popen's lock: hence ``os.waitpid`` here, not ``wait``."""
    deadline = time.monotonic() + timeout
    while proc.returncode is None and time.monotonic() < deadline:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.1)
    return proc.returncode


def _scheduler_job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


#: SLURM job states (sacct / squeue) by what they mean for a run that has not finished
SLURM_RUNNING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"})
SLURM_QUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED",
                          "PREEMPTED", "STOPPED"})


@dataclass
class JobStatus:
    """``status``: done, running, queued, failed, missing (never submitted), unknown (the scheduler
    could not be asked); ``detail`` says why; ``log`` is the job's output."""
    status: str
    detail: str = ""
    log: str | None = None
    job_id: str | None = None


def status_of(run: dict[str, Any], jobs_dir: str | Path, scheduler: dict[str, str | None]) -> JobStatus:
    """A job's status from its files and, for a scheduler's job, ``scheduler[job_id]`` (its state,
    None when it has none, absent when it could not be asked)."""
    submitted = read_json(job_file(jobs_dir, run, ".json"))
    state = read_json(job_file(jobs_dir, run, ".state.json")) or {}
    log = (submitted or {}).get("log") or state.get("log")
    job_id = (submitted or {}).get("job_id")
    if finished(run):
        return JobStatus("done", log=log, job_id=job_id)
    if submitted is None:
        return JobStatus("missing", "never submitted" if not state else "no submission record", log, job_id)
    ended = f"{state['state']}, exit code {state.get('exit_code')}" if state.get("ended") else ""
    if submitted.get("launcher") == "slurm":
        if job_id not in scheduler:
            return JobStatus("unknown", f"SLURM job {job_id}: the scheduler could not be asked", log, job_id)
        where = scheduler[job_id]
        if where in SLURM_RUNNING:
            return JobStatus("running", f"SLURM job {job_id} {where}", log, job_id)
        if where in SLURM_QUEUED:
            return JobStatus("queued", f"SLURM job {job_id} {where}", log, job_id)
        return JobStatus("failed", f"SLURM job {job_id} {where or 'no longer known to the scheduler'}"
                         + (f"; fit {ended}" if ended else ""), log, job_id)
    same_host = submitted.get("host") == socket.gethostname()
    if state.get("state") == "running" and not state.get("ended"):
        if not same_host or process_alive(state["pid"], state.get("pid_start")):
            return JobStatus("running", f"pid {state['pid']} on {state.get('host')}", log, job_id)
        return JobStatus("failed", f"pid {state['pid']} ended without a result (killed?)", log, job_id)
    if ended:
        return JobStatus("failed", f"fit {ended}", log, job_id)
    if same_host and process_alive(submitted["submitter_pid"], submitted.get("submitter_start")):
        return JobStatus("queued", f"waiting in sweep process {submitted['submitter_pid']}", log, job_id)
    return JobStatus("missing", "its sweep stopped before it started", log, job_id)


#: statuses a new `sweep` submits again
RESUBMIT = frozenset({"missing", "failed"})
