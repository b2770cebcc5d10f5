"""The one choice of device and precision, with CUDA faked where the rule depends on a GPU, and the
commands' one-line errors for a device that is not there."""
import pytest
import torch

from crossvit_mtl.cli import main
from crossvit_mtl.engine import precision
from crossvit_mtl.engine.precision import Placement, auto_precision, resolve
from fixtures_run import tiny_config, write_config


def fake_cuda(monkeypatch, capability=(8, 0), count=1, name="Fake GPU"):
    """torch.cuda as a machine with ``count`` GPUs of ``capability`` answers it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_rule_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: native)
    chosen = resolve("cpu")
    assert chosen.device == torch.device("cpu") and chosen.precision == ("bf16" if native else "fp32")
    assert ("multiplies bf16 natively" if native else "no native bf16") in chosen.reason
    assert auto_precision("cpu") == ("bf16-mixed" if native else "32-true")
    assert resolve("cpu", "fp32") == Placement(torch.device("cpu"), "fp32", "asked for by --precision")
    assert resolve("cpu", "bf16").precision == "bf16"  # asked for: used as asked, even emulated


@pytest.mark.parametrize("capability, chosen, lightning, why", [
    ((9, 0), "bf16", "bf16-mixed", "bf16 tensor cores (compute capability 9.0)"),
    ((8, 6), "bf16", "bf16-mixed", "bf16 tensor cores (compute capability 8.6)"),
    ((7, 5), "fp16", "16-mixed", "fp16 but no bf16 tensor cores (compute capability 7.5 < 8.0)"),
    ((7, 0), "fp16", "16-mixed", "fp16 but no bf16 tensor cores (compute capability 7.0 < 8.0)"),
    ((6, 1), "fp32", "32-true", "no fp16 or bf16 tensor cores (compute capability 6.1 < 7.0)"),
])
def test_cuda_rule_follows_the_compute_capability(monkeypatch, capability, chosen, lightning, why):
    fake_cuda(monkeypatch, capability, name="Some GPU")
    placement = resolve("auto")
    assert placement == Placement(torch.device("cuda", 0), chosen, why, "Some GPU")
    how = "fp32" if chosen == "fp32" else f"{chosen} autocast"
    assert str(placement) == f"cuda:0 (Some GPU), {how}: {why}"
    assert auto_precision() == auto_precision("gpu") == lightning
    assert resolve("cuda", "fp32").precision == "fp32" and resolve("cuda", "fp16").precision == "fp16"


def test_auto_takes_the_cpu_without_cuda_and_cuda_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto").device == torch.device("cpu")
    fake_cuda(monkeypatch, count=2)
    assert resolve("auto").device == torch.device("cuda", 0)
    assert resolve("cuda:1").device == torch.device("cuda", 1)
    assert resolve("cpu").device == torch.device("cpu")  # asked for: the CPU, CUDA or not


def test_impossible_devices_and_precisions_are_refused_naming_them(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda: no CUDA device available \(torch "):
        resolve("cuda")
    for bad in ("gpu", "mps", "cuda:x", "cuda:", "cpu:0", ""):
        with pytest.raises(ValueError, match=f"^--device {bad}: must be auto, cpu, cuda or cuda:N$"):
            resolve(bad)
    with pytest.raises(ValueError, match="^--precision fp16: fp16 autocast is for CUDA devices"):
        resolve("cpu", "fp16")
    with pytest.raises(ValueError, match="^--precision half: must be one of auto, bf16, fp16, fp32$"):
        resolve("cpu", "half")
    fake_cuda(monkeypatch, capability=(7, 5), name="Old GPU")
    with pytest.raises(ValueError, match=r"^--device cuda:3: no such device; this machine has 1 CUDA device \(cuda:0\)$"):
        resolve("cuda:3")
    fake_cuda(monkeypatch, capability=(7, 5), count=2, name="Old GPU")
    with pytest.raises(ValueError, match=r"has 2 CUDA devices \(cuda:0 to cuda:1\)$"):
        resolve("cuda:2")
    with pytest.raises(ValueError, match=r"^--precision bf16: Old GPU \(compute capability 7.5\) has no bf16 "):
        resolve("cuda", "bf16")


def test_autocast_runs_products_in_the_chosen_precision():
    a = torch.randn(4, 4)
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        with Placement(torch.device("cpu"), name, "test").autocast():
            assert torch.mm(a, a).dtype == dtype


@pytest.mark.parametrize("argv", [
    ["bench", "--models", "crossvit_seg_tiny"],
    ["export", "--model", "crossvit_seg_tiny", "--format", "onnx", "--out", "{tmp}/m.onnx"],
    ["predict", "--checkpoint", "{tmp}/run.ckpt", "--input", "{tmp}", "--out", "{tmp}/out"],
])
def test_commands_refuse_a_missing_device_in_one_line(monkeypatch, tmp_path, capsys, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    command = argv[0]
    if command == "predict":  # predict reads its checkpoint first: give it one
        from crossvit_mtl import create_model

        torch.save({"state_dict": {}}, tmp_path / "run.ckpt")  # a file, read through the stand-in below

        model = create_model("crossvit_seg_tiny", img_size=(32, 64))
        meta = {"image_size": [32, 64], "mean": [0.5] * 3, "std": [0.5] * 3}
        monkeypatch.setattr("crossvit_mtl.models.model_from_checkpoint", lambda path: (model, meta))
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"crossvit-mtl {command}: error: --device cuda: no CUDA device available")
    assert err.count("\n") == 1
    fake_cuda(monkeypatch)
    assert main([*argv, "--device", "cuda:3"]) == 2
    err = capsys.readouterr().err
    assert err == (f"crossvit-mtl {command}: error: --device cuda:3: no such device; this machine has 1 "
                   "CUDA device (cuda:0)\n")


def test_gradient_weighting_with_fp16_loss_scaling_fails_in_one_line(tmp_path, capsys):
    """The default on GPUs without bf16 is fp16 with loss scaling, which gradient aggregation
    cannot use: `fit` says so before training (faked here with the plugin that CUDA would get)."""
    config = tmp_path / "config.yaml"
    settings = tiny_config(model={"weighting": "upgrad"}, data={"tasks": ["segmentation", "depth"]},
                           trainer={"max_steps": 1, "plugins": [{"class_path": "lightning.pytorch.plugins.MixedPrecision",
                                                                 "init_args": {"precision": "16-mixed", "device": "cpu"}}]})
    settings["trainer"]["precision"] = None  # null: not the command line's default, the plugin's
    write_config(config, settings)
    assert main(["fit", "--config", str(config), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == ("crossvit-mtl fit: error: model.weighting 'upgrad' cannot use fp16 loss scaling "
                   "(trainer.precision 16-mixed); use bf16-mixed or 32-true")
    assert not (tmp_path / "run" / "checkpoints").exists()
