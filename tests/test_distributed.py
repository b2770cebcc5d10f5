"""Two CPU processes on the gloo backend: evaluation equals one process, a DDP checkpoint
resumes in one process, and a torchjd aggregation step equals one process's on the same data."""
import copy
import json
import os
import subprocess
import sys
import types

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import Callback
from torch.distributed.nn.functional import all_reduce

from crossvit_mtl.cli import main
from fixtures_run import tiny_config

# The tiny run at 64x128, 7 validation samples over 2 ranks: ranks get 4 and 3 samples, so a padding sampler
# would count one sample twice. Batch 1 in evaluation: fp32 outputs do not depend on which samples
# share a batch, so any difference left would be the metrics' reduction.
CONFIG = tiny_config(data={"options": {"length": 7, "height": 64, "width": 128},
                           "tasks": ["segmentation", "depth", "normal"], "eval_batch_size": 1},
                     trainer={"limit_test_batches": None})
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]


def cli(*args, cwd):
    """The command in a process of its own (DDP launches its second rank from it)."""
    # this folder on the path: configs may name a callback of this file (GlobalBatchNorm)
    path = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-m", "crossvit_mtl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def in_process(*args, cwd, monkeypatch):
    """The command in this process: one process needs no launch of its own."""
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    assert main(list(args)) == 0


@pytest.mark.heavy
def test_ddp_run_evaluates_as_one_process_does_and_resumes_in_one_process(tmp_path, monkeypatch):
    """One DDP launch fits and tests (the test on the fit's last weights, the checkpoint's); the
    checkpoint is then tested and resumed in this process."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cli("fit", "--config", "config.yaml", "--run_dir", "ddp_run", "--test_after_fit", "true", *DDP, cwd=tmp_path)
    ckpt = torch.load(tmp_path / "ddp_run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2

    # evaluation: the ranks' summed metric states equal one process's over the same samples
    in_process("test", "--config", "config.yaml", "--run_dir", "eval_single", "--ckpt_path",
               "ddp_run/checkpoints/last.ckpt", cwd=tmp_path, monkeypatch=monkeypatch)
    single = json.loads((tmp_path / "eval_single" / "metrics_test.json").read_text())["results"]
    ddp = json.loads((tmp_path / "ddp_run" / "metrics_test.json").read_text())
    assert ddp["checkpoint_selection"] == "last" and ddp["global_step"] == 2
    ddp = ddp["results"]
    assert single["segmentation"]["confusion"] == ddp["segmentation"]["confusion"]
    assert sum(map(sum, single["segmentation"]["confusion"])) > 0
    for task in ("segmentation", "depth", "normal"):
        for key, value in single[task].items():
            if isinstance(value, float):
                assert ddp[task][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (task, key)

    # the DDP checkpoint resumes in one process and trains on
    in_process("fit", "--config", "config.yaml", "--run_dir", "ddp_run", "--ckpt_path", "last",
               "--trainer.max_steps", "3", cwd=tmp_path, monkeypatch=monkeypatch)
    resumed = torch.load(tmp_path / "ddp_run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 3
    changed = [k for k, v in resumed["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, ckpt["state_dict"][k])]
    assert changed


def _global_batch_norm(self, x):
    """BatchNorm with the statistics of the union of the ranks' batches: sums all-reduced with
    the differentiable all_reduce, whose backward all-reduces too (as SyncBatchNorm's does)."""
    if not self.training:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
    ranks = dist.get_world_size() if dist.is_initialized() else 1
    total = all_reduce if ranks > 1 else (lambda t: t)
    dims, shape = [0, *range(2, x.dim())], (1, -1) + (1,) * (x.dim() - 2)
    count = x.numel() // x.shape[1] * ranks
    mean = total(x.sum(dims)) / count
    centred = x - mean.view(shape)
    var = total((centred * centred).sum(dims)) / count
    with torch.no_grad():
        self.num_batches_tracked += 1
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var * count / (count - 1), self.momentum)
    return centred * torch.rsqrt(var + self.eps).view(shape) * self.weight.view(shape) + self.bias.view(shape)


class GlobalBatchNorm(Callback):
    """``trainer.sync_batchnorm`` on CPU, where torch's SyncBatchNorm refuses to run ("SyncBatchNorm
    layers only work with GPU modules"): every batch norm normalises with the statistics of the
    global batch, by the same arithmetic in one process as in several. Also saves the initial
    weights (``initial.pt`` in the run folder)."""

    def setup(self, trainer, pl_module, stage):
        for module in pl_module.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.forward = types.MethodType(_global_batch_norm, module)

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            torch.save(pl_module.state_dict(), os.path.join(trainer.default_root_dir, "initial.pt"))


# UPGrad on 2 ranks x 2 samples against one process on 4. The training sampler gives rank r the
# positions r, r+2... of one permutation (with per-position augmentation seeds), so each batch of
# 4 holds exactly the two ranks' batches of 2; 8 samples, so no rank is padded. Segmentation (no
# ignored pixels) and classification losses are means over as many elements on every rank, so
# the ranks' averaged Jacobian is the one of the batch of 4 (no scale crop: a crop marks the
# scenes' layout class as not annotated, and means over unequal counts would differ). SGD, not Adam: Adam divides each
# coordinate by |g| + 1e-8, which turns float32 rounding in gradients that are 0 in exact
# arithmetic (attention key biases) into weight differences of ~2e-5 after one step.
AGGREGATION = copy.deepcopy(CONFIG)
AGGREGATION["model"].update(weighting="upgrad", optimizer="sgd", lr=0.1)
AGGREGATION["data"].update(tasks=["segmentation", "classification"],
                           options={"length": 8, "height": 64, "width": 128},
                           train_transforms={"scales": [1.0]})
AGGREGATION["trainer"]["callbacks"] = [{"class_path": "test_distributed.GlobalBatchNorm"}]


@pytest.mark.heavy
def test_ddp_gradient_aggregation_equals_single_process(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(AGGREGATION))
    cli("fit", "--config", "config.yaml", "--run_dir", "ddp", *DDP, cwd=tmp_path)
    in_process("fit", "--config", "config.yaml", "--run_dir", "single", "--data.batch_size", "4", cwd=tmp_path,
               monkeypatch=monkeypatch)
    runs = {}
    for run in ("ddp", "single"):
        ckpt = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["global_step"] == 2 and ckpt["callbacks"]["SkipNonFiniteSteps"]["skipped_steps"] == 0
        runs[run] = torch.load(tmp_path / run / "initial.pt", weights_only=True), ckpt["state_dict"]
    (initial, ddp), (initial_single, single) = runs["ddp"], runs["single"]
    assert initial.keys() == initial_single.keys() == ddp.keys() == single.keys()
    assert all(torch.equal(initial[k], initial_single[k]) for k in initial)
    worst = max(((ddp[k].double() - v.double()).abs().max().item(), k) for k, v in single.items())
    print(f"largest difference DDP - one process: {worst[0]:.2e} ({worst[1]})")
    assert worst[0] <= 1e-5, worst
    # the steps moved every trained part: encoder, decoder, both heads, batch-norm statistics
    moved = {k: (v.double() - initial[k].double()).abs().max().item() for k, v in single.items()}
    for prefix in ("model.encoder.", "model.decoder.", "model.heads.segmentation.",
                   "model.heads.classification.", "model.decoder.fuse.1.running_mean"):
        assert max(m for k, m in moved.items() if k.startswith(prefix)) > 100 * 1e-5, prefix
