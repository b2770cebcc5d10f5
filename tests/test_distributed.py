"""Two CPU processes on the gloo backend: evaluation equals one process, and a DDP checkpoint
resumes in one process."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

# 7 validation samples over 2 ranks: ranks get 4 and 3 samples, so a padding sampler would count
# one sample twice.
CONFIG = {
    "model": {"model": "crossvit_mtl_tiny", "lr": 1e-3, "warmup_epochs": 0.0,
              "model_options": {"dims": [32, 64], "heads": [2, 2], "stages": [[1, 1, 1]],
                                "decoder_channels": 16, "detail_channels": 8, "decoder_stages": 1}},
    "data": {"dataset": "synth", "options": {"length": 7, "height": 64, "width": 128},
             "tasks": ["segmentation", "depth", "normal"], "batch_size": 2, "num_workers": 0,
             # batch 1 in evaluation: fp32 outputs do not depend on which samples share a batch,
             # so any difference left would be the metrics' reduction
             "eval_batch_size": 1},
    "trainer": {"max_steps": 2, "limit_val_batches": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "precision": "32-true", "accelerator": "cpu"},
    "report_samples": 0,
}
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]


def cli(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "crossvit_mtl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cli("fit", "--config", "config.yaml", "--run_dir", "ddp_run", *DDP, cwd=root)
    return root


def test_ddp_evaluation_equals_single_process(ddp_run):
    ckpt = "ddp_run/checkpoints/last.ckpt"
    cli("test", "--config", "config.yaml", "--run_dir", "eval_single", "--ckpt_path", ckpt, cwd=ddp_run)
    cli("test", "--config", "config.yaml", "--run_dir", "eval_ddp", "--ckpt_path", ckpt, *DDP, cwd=ddp_run)
    single = json.loads((ddp_run / "eval_single" / "metrics_test.json").read_text())["results"]
    ddp = json.loads((ddp_run / "eval_ddp" / "metrics_test.json").read_text())["results"]
    assert single["segmentation"]["confusion"] == ddp["segmentation"]["confusion"]
    assert sum(map(sum, single["segmentation"]["confusion"])) > 0
    for task in ("segmentation", "depth", "normal"):
        for key, value in single[task].items():
            if isinstance(value, float):
                assert ddp[task][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (task, key)


def test_ddp_checkpoint_resumes_in_one_process(ddp_run):
    ckpt = torch.load(ddp_run / "ddp_run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    cli("fit", "--config", "config.yaml", "--run_dir", "ddp_run", "--ckpt_path", "last",
        "--trainer.max_steps", "3", cwd=ddp_run)
    resumed = torch.load(ddp_run / "ddp_run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 3
    changed = [k for k, v in resumed["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, ckpt["state_dict"][k])]
    assert changed
