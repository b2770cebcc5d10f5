"""One tiny trained multi-task run (fit + test through the command line), shared by the export,
prediction and report tests of a session."""
import yaml

from crossvit_mtl.cli import main

_RUNS = {}


def tiny_run(tmp_path_factory):
    """Run folder of a 2-step crossvit_mtl_tiny fit and its test on 32x64 synthetic scenes."""
    if "run" not in _RUNS:
        root = tmp_path_factory.mktemp("tiny_run")
        config = root / "config.yaml"
        config.write_text(yaml.safe_dump({
            "model": {"model": "crossvit_mtl_tiny", "lr": 1e-3, "warmup_epochs": 0.0,
                      "model_options": {"stages": [[1, 1, 1]] * 2, "decoder_stages": 1}},
            "data": {"dataset": "synth", "options": {"length": 4, "height": 32, "width": 64},
                     "tasks": ["segmentation", "depth", "normal", "classification"],
                     "batch_size": 2, "num_workers": 0},
            "trainer": {"max_steps": 2, "limit_val_batches": 1, "limit_test_batches": 1,
                        "enable_progress_bar": False, "enable_model_summary": False,
                        "precision": "32-true", "log_every_n_steps": 1},
            "report_samples": 2,
        }))
        run_dir = root / "run"
        assert main(["fit", "--config", str(config), "--run_dir", str(run_dir)]) == 0
        assert main(["test", "--config", str(config), "--run_dir", str(run_dir),
                     "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]) == 0
        _RUNS["run"] = run_dir
    return _RUNS["run"]
