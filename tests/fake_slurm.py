"""A one-machine SLURM for tests: ``sbatch``, ``srun``, ``squeue``, ``sacct``, ``scancel`` and
``scontrol`` executables on PATH that keep every submitted script and run it.

``sbatch SCRIPT`` copies the script to ``{root}/submitted/{id}.sh``, answers ``Submitted batch job
{id}`` and runs it in the background, each task of an ``#SBATCH --array=0-N%K`` at most K at a time,
with the environment SLURM gives a task (``SLURM_ARRAY_JOB_ID``, ``SLURM_PROCID`` ...). ``srun``
runs its command as a job step in a process group of its own, the one ``scancel`` signals.
``scontrol requeue ID`` runs the task again once its script exits; ``sacct`` and ``squeue`` print
the tasks' states in the formats the real ones use. Task state lives in ``{root}/tasks/{id}.json``.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager, suppress
from pathlib import Path

COMMANDS = ("sbatch", "srun", "squeue", "sacct", "scancel", "scontrol")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT"}


def install(bin_dir: Path, root: Path) -> dict[str, str]:
    """Writes the executables; returns the environment variables that put them on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                        f"import fake_slurm\nfake_slurm.main({name!r}, sys.argv[1:])\n")
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_ROOT": str(root)}


def _root() -> Path:
    return Path(os.environ["FAKE_SLURM_ROOT"])


@contextmanager
def _task(task_id: str):
    """A task's record, read and written under a lock (the runner, srun, scancel and scontrol share it)."""
    path = _root() / "tasks" / f"{task_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_root() / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(path.read_text()) if path.exists() else {}
        yield record
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)


def tasks() -> dict[str, dict]:
    folder = _root() / "tasks"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def _matching(ids: list[str]) -> list[str]:
    """Task ids named by ``ids``: ``123`` is every task of job 123, ``123_1`` one task."""
    found = []
    for task_id in tasks():
        if any(task_id == i or task_id.split("_")[0] == i for i in ids):
            found.append(task_id)
    return found


def sbatch(args: list[str]) -> None:
    script = Path(args[-1]).read_text()
    options = dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, re.M))
    counter = _root() / "next_id"
    with open(_root() / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        job_id = int(counter.read_text()) if counter.exists() else 100
        counter.write_text(str(job_id + 1))
    (_root() / "submitted").mkdir(exist_ok=True)
    (_root() / "submitted" / f"{job_id}.sh").write_text(script)
    array = re.fullmatch(r"0-(\d+)%(\d+)", options.get("array", ""))
    ids = [f"{job_id}_{i}" for i in range(int(array.group(1)) + 1)] if array else [str(job_id)]
    for task_id in ids:
        with _task(task_id) as record:
            record.update(state="PENDING", name=options.get("job-name", ""), restarts=0, requeue=False)
    subprocess.Popen([sys.executable, __file__, "run", str(job_id), str(_root() / "submitted" / f"{job_id}.sh"),
                      str(int(array.group(2)) if array else 1), *ids], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"Submitted batch job {job_id}")


def run_tasks(job_id: str, script: str, parallel: int, ids: list[str]) -> None:
    """The scheduler's side: each task's batch script, at most ``parallel`` at once, again on requeue."""
    slots = threading.Semaphore(parallel)

    def run_one(task_id: str) -> None:
        with slots:
            while True:
                with _task(task_id) as record:
                    if record["state"] == "CANCELLED":
                        return
                    record["state"] = "RUNNING"
                    restarts = record["restarts"]
                array_task = task_id.split("_")[1] if "_" in task_id else None
                env = {**os.environ, "SLURM_JOB_ID": str(int(job_id) + int(array_task or 0)), "SLURM_NTASKS": "1",
                       "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                       "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "localhost", "SLURM_NODELIST": "localhost",
                       "SLURM_JOB_NAME": record["name"], "SLURM_RESTART_COUNT": str(restarts),
                       "FAKE_SLURM_TASK": task_id}
                if array_task is not None:
                    env.update(SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=array_task)
                code = subprocess.run(["bash", script], env=env, stdin=subprocess.DEVNULL).returncode
                with _task(task_id) as record:
                    if record["state"] == "CANCELLED":
                        return
                    if record["requeue"]:
                        record.update(state="REQUEUED", requeue=False, restarts=restarts + 1)
                        continue
                    record.update(state="COMPLETED" if code == 0 else "FAILED", exit_code=code)
                    return

    threads = [threading.Thread(target=run_one, args=(t,)) for t in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def srun(args: list[str]) -> None:
    outputs = {}
    while args and args[0].startswith("--"):
        option = args.pop(0)
        key, _, value = option[2:].partition("=")
        if key in ("output", "error"):
            outputs[key] = value or args.pop(0)
    task_id = os.environ["FAKE_SLURM_TASK"]
    names = {"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
             "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}
    files = {}
    for key, pattern in outputs.items():
        for code, value in names.items():
            pattern = pattern.replace(code, value)
        files[key] = open(pattern, "a")  # noqa: SIM115 (the step's output, open while it runs)
    step = subprocess.Popen(args, start_new_session=True, stdin=subprocess.DEVNULL, stdout=files.get("output"),
                            stderr=files.get("error", subprocess.STDOUT if "output" in files else None))
    with _task(task_id) as record:
        record["step_pgid"] = step.pid
    code = step.wait()
    sys.exit(code if code >= 0 else 128 - code)


def scancel(args: list[str]) -> None:
    sig = None
    if "--signal" in args:
        i = args.index("--signal")
        sig = signal.Signals["SIG" + args[i + 1].removeprefix("SIG")]
        args = args[:i] + args[i + 2:]
    for task_id in _matching(args):
        with _task(task_id) as record:
            if sig is None:
                record["state"] = "CANCELLED"
            pgid = record.get("step_pgid") if record["state"] == "RUNNING" or sig is None else None
        if pgid:
            with suppress(ProcessLookupError):
                os.killpg(pgid, sig or signal.SIGKILL)


def scontrol(args: list[str]) -> None:
    if args[:1] != ["requeue"]:
        sys.exit(f"fake scontrol: only `requeue` is known, got {args}")
    for task_id in _matching(args[1].split(",")):
        with _task(task_id) as record:
            record["requeue"] = True


def sacct(args: list[str]) -> None:
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for task_id in _matching(ids):
        record = tasks()[task_id]
        print(f"{task_id}|{record['state']}|localhost")
        print(f"{task_id}.batch|{record['state']}|localhost")


def squeue(args: list[str]) -> None:
    ids = args[args.index("-j") + 1].split(",") if "-j" in args else []
    for task_id in _matching(ids):
        state = tasks()[task_id]["state"]
        if state not in FINAL:
            print(f"{task_id}|{state}")


def main(command: str, args: list[str]) -> None:
    {"sbatch": sbatch, "srun": srun, "squeue": squeue, "sacct": sacct, "scancel": scancel, "scontrol": scontrol}[command](args)


if __name__ == "__main__" and sys.argv[1] == "run":
    run_tasks(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:])
