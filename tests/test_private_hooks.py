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


def test_jsonargparse_bool_keys_are_found_by_their_metavar_and_take_a_bare_flag():
    # cli/train.bare_booleans finds the bool keys of a parser among argparse's _actions by the
    # metavar jsonargparse gives them, and makes their one value optional
    from jsonargparse import ArgumentParser

    from crossvit_mtl.cli.train import BOOLEAN_METAVARS, bare_booleans

    class Options:
        def __init__(self, compile: bool = False, benchmark: bool | None = None, steps: int = 1):
            pass

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Options, "opt")
    found = {a.dest: a.metavar for a in parser._actions if a.metavar in BOOLEAN_METAVARS}
    assert found == {"opt.compile": "{true,false}", "opt.benchmark": "{true,false,null}"}
    assert all(a.nargs is None for a in parser._actions if a.dest in found)
    bare_booleans(parser)
    parsed = parser.parse_args(["--opt.compile", "--opt.benchmark", "--opt.steps", "3"])
    assert (parsed.opt.compile, parsed.opt.benchmark, parsed.opt.steps) == (True, True, 3)
    assert parser.parse_args(["--opt.compile", "false"]).opt.compile is False


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
