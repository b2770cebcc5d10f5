"""One contract per private hook of torch, torchjd and Lightning the project relies on: an upgrade
that moves or changes one fails here, by name, instead of silently changing precision or resume.
pyproject's upper bounds keep such upgrades deliberate."""
from __future__ import annotations

import inspect

import torch


def test_torch_cpu_feature_checks_choose_the_precision():
    # engine/precision.cpu_has_bf16_matmul calls both directly: no default, no silent fp32
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        assert isinstance(getattr(torch.cpu, name)(), bool), name


def test_torchjd_nash_mtl_rebuilds_its_solver_problem_from_restored_state():
    # weighting/gradient._REBUILD calls _NashMTLWeighting._init_optim_problem after a resume
    from crossvit_mtl.weighting.gradient import _REBUILD, GradientAggregation

    aggregation = GradientAggregation(["a", "b"], "nashmtl")
    weightings = [m for m in aggregation.aggregator.modules() if type(m).__name__ in _REBUILD]
    assert [type(m).__name__ for m in weightings] == ["_NashMTLWeighting"]
    weighting = weightings[0]
    assert weighting.step == 0 and callable(weighting._init_optim_problem)
    weighting.step = 1
    _REBUILD["_NashMTLWeighting"](weighting)  # builds the cvxpy problem from the restored attributes
    assert hasattr(weighting, "prob")


def test_lightning_cli_reads_the_checkpoint_path_through_the_overridden_hook():
    # cli/train.CrossViTCLI._parse_ckpt_path names an unreadable --ckpt_path in one line
    from lightning.pytorch.cli import LightningCLI

    from crossvit_mtl.cli.train import CrossViTCLI

    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__)
    assert CrossViTCLI._parse_ckpt_path is not LightningCLI._parse_ckpt_path


def test_lightning_loop_progress_tells_the_batches_done_and_the_last_batch():
    # engine/datamodule.state_dict (the training order's position) and engine/checkpoint.StepCheckpoint
    from lightning.pytorch import Trainer

    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)
    progress = trainer.fit_loop.epoch_loop.batch_progress
    assert isinstance(progress.current.processed, int) and isinstance(progress.is_last_batch, bool)


def test_lightning_unrepeated_sampler_and_ddp_gradient_sync_flag():
    # engine/datamodule evaluates under DDP without padded repeats; engine/module turns off DDP's
    # reducer for gradient aggregation, which takes its own backward passes
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
    from torch.nn.parallel import DistributedDataParallel

    sampler = UnrepeatedDistributedSampler(list(range(5)), num_replicas=2, rank=1, shuffle=False)
    assert list(sampler) == [1, 3]
    assert "self.require_backward_grad_sync = True" in inspect.getsource(DistributedDataParallel.__init__)
