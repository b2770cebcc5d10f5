"""The callbacks a ``DenseTaskModule`` trains with: one list, for the command line and for a
Trainer built by hand (``pl.Trainer(callbacks=training_callbacks(module))``)."""
from __future__ import annotations

from lightning.pytorch.callbacks import Callback, ThroughputMonitor

from crossvit_mtl.engine.aggregation import AggregatorOwnsGradients
from crossvit_mtl.engine.calibration import StartFromData
from crossvit_mtl.engine.module import DenseTaskModule
from crossvit_mtl.engine.nonfinite import SkipNonFiniteSteps
from crossvit_mtl.engine.sampling import RestoreRNGStates

#: batches the throughput is averaged over (Lightning's ``Throughput`` window)
THROUGHPUT_WINDOW = 20


def _batch_size(batch: dict) -> int:
    return int(batch["image"].shape[0])


def training_callbacks(module: DenseTaskModule) -> list[Callback]:
    """Non-finite steps skipped (``model.max_nonfinite_steps`` in a row stop the run), the RNG
    states saved and restored on resume, heads and loss scales started from the data before a
    fresh fit's first step, throughput logged (``train/device/samples_per_sec``: images per
    second, every ``log_every_n_steps`` once the window is full) and, for a gradient aggregator,
    the trainer settings it needs. Each keeps its own state in checkpoints."""
    callbacks: list[Callback] = [
        SkipNonFiniteSteps(module.hparams["max_nonfinite_steps"]), RestoreRNGStates(), StartFromData(),
        ThroughputMonitor(batch_size_fn=_batch_size, window_size=THROUGHPUT_WINDOW)]
    if module.weighting.needs_network:
        callbacks.append(AggregatorOwnsGradients(module.hparams["weighting"]))
    return callbacks
