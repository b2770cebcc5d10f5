"""A non-finite loss or gradient: the step is skipped and counted; too many in a row stop the run
with a message, and no checkpoint ever holds NaN weights."""
import math

import pytest
import torch

from crossvit_mtl.cli import main
from crossvit_mtl.engine.module import DenseTaskModule
from fixtures_run import tiny_config, write_config

#: the tiny run, segmentation and depth: 6 steps an epoch of 24 scenes, 2 epochs
CONFIG = tiny_config(model={"scheduler": "none", "max_nonfinite_steps": 3},
                     data={"options": {"length": 24, "height": 32, "width": 64}, "tasks": ["segmentation", "depth"],
                           "batch_size": 4},
                     trainer={"max_steps": None, "max_epochs": 2, "logger": False, "limit_test_batches": None,
                              "log_every_n_steps": None})


@pytest.fixture
def poisoned(monkeypatch):
    """Makes the depth loss NaN (or its gradient Inf) at the chosen optimiser steps, and records the
    weights and batch-norm statistics each step starts from."""
    plan = {"nan_loss": set(), "bad_grad": set()}
    seen = []
    original, original_start = DenseTaskModule.weighted_losses, DenseTaskModule.on_train_batch_start

    def on_train_batch_start(self, batch, batch_idx):
        seen.append((self.global_step, {k: v.detach().clone() for k, v in self.model.state_dict().items()}))
        return original_start(self, batch, batch_idx)

    def weighted_losses(self, outputs, batch):
        losses = original(self, outputs, batch)
        if self.training:
            if self.global_step in plan["nan_loss"]:
                losses["depth"] = losses["depth"] * float("nan")
            elif self.global_step in plan["bad_grad"]:
                # a finite loss whose gradient is not: d sqrt(z)/dz = inf at z = 0
                losses["depth"] = losses["depth"] + torch.sqrt((outputs["depth"].float() * 0).sum())
                assert torch.isfinite(losses["depth"])
        return losses

    monkeypatch.setattr(DenseTaskModule, "weighted_losses", weighted_losses)
    monkeypatch.setattr(DenseTaskModule, "on_train_batch_start", on_train_batch_start)
    return plan, seen


def _fit(tmp_path, *extra):
    write_config(tmp_path / "config.yaml", CONFIG)
    return main(["fit", "--config", str(tmp_path / "config.yaml"), "--run_dir", str(tmp_path / "run"), *extra])


def test_a_nonfinite_step_is_skipped_and_counted(tmp_path, poisoned):
    plan, seen = poisoned
    plan["nan_loss"].add(2)
    plan["bad_grad"].add(4)
    assert _fit(tmp_path) == 0
    steps = [step for step, _ in seen]
    # the skipped steps still count as optimiser steps (the schedule moves on) ...
    assert steps == list(range(12))
    # ... but leave the weights and batch-norm statistics exactly as they were
    assert any("running_mean" in k for k in seen[0][1])
    for bad in (2, 4):
        before, after = seen[bad][1], seen[bad + 1][1]
        assert all(torch.equal(before[k], after[k]) for k in before), bad
    changed = seen[6][1], seen[7][1]
    assert any(not torch.equal(changed[0][k], changed[1][k]) for k in changed[0])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["callbacks"]["SkipNonFiniteSteps"] == {"skipped_steps": 2, "nonfinite_in_row": 0}
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_too_many_in_a_row_stop_the_run_with_finite_weights(tmp_path, poisoned, capsys):
    plan, seen = poisoned
    plan["nan_loss"].update(range(7, 100))
    assert _fit(tmp_path, "--checkpoint_every_n_steps", "2") == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("crossvit-mtl fit: stopped: the loss or its gradient was not finite for 3 steps in a row")
    assert seen[-1][0] == 9  # steps 7, 8, 9 skipped, then the stop
    last_good = seen[7][1]
    assert all(torch.equal(last_good[k], seen[-1][1][k]) for k in last_good)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] <= 10
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    model_state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if ckpt["global_step"] >= 7:  # saved after the bad run began: it holds the last finite weights
        assert all(torch.equal(model_state[k], last_good[k]) for k in last_good)
    assert math.isfinite(ckpt["callbacks"]["SkipNonFiniteSteps"]["skipped_steps"])
