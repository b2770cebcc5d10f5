"""A fit the scheduler is about to stop writes ``last.ckpt`` at the end of the step under way and
exits, so the job that follows resumes from it bit-exactly (``fit --ckpt_path last``).

SLURM warns a job before its time limit, and before preemption where the cluster is set to, with
the signal submitit asks for (``#SBATCH --signal=USR2@90``); preemption also sends SIGTERM, which
Lightning turns into ``trainer.received_sigterm``. A signal handler runs between two bytecodes of
whatever the process is doing, mid-step: it only notes the signal, and the checkpoint is written
where ``StepCheckpoint`` writes its own, after an optimiser step, where the resume is tested.
Requeueing is the launcher's (submitit's), never this callback's nor Lightning's.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class CheckpointOnSignal(Callback):
    """On ``SIG{signal_name}`` (or SIGTERM) the fit writes ``checkpoints/last.ckpt`` after the step
    under way and exits with ``os.EX_TEMPFAIL`` (75: try again). The epoch's last step is left to
    the epoch-end checkpoint, as ``StepCheckpoint`` leaves it; the fit then stops one step later.
    Under DDP the ranks agree on the step: a signal seen by any rank stops all of them."""

    def __init__(self, signal_name: str = "USR2"):
        name = signal_name.upper().removeprefix("SIG")
        if not isinstance(getattr(signal, f"SIG{name}", None), signal.Signals):
            raise ValueError(f"signal_name: no signal SIG{name}")
        self.signum = signal.Signals[f"SIG{name}"]
        self._received: str | None = None
        self._previous: Any = None

    def _note(self, signum, frame) -> None:
        self._received = signal.Signals(signum).name

    def setup(self, trainer, pl_module, stage: str) -> None:
        # before the data loaders start: their worker processes inherit this handler, not a launcher's
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._note)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        reason = self._received or ("SIGTERM" if trainer.received_sigterm else None)
        if not trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        if trainer.checkpoint_callback is None or trainer.checkpoint_callback.dirpath is None:
            raise RuntimeError("CheckpointOnSignal needs the run's ModelCheckpoint to know where last.ckpt goes")
        path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            print(f"{reason or 'a signal on another rank'}: stopped after step {trainer.global_step}, "
                  f"checkpoint {path}; `fit --ckpt_path last` resumes", file=sys.stderr, flush=True)
        raise SystemExit(os.EX_TEMPFAIL)
