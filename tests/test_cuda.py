"""What runs on a GPU, checked on one: every preset's forward and backward against CPU fp32, a
two-step `fit`, `predict` and `export` on CUDA, a bench case. `make gpu-check` runs these
(``pytest -m cuda``) and then the bench; without a CUDA device they skip.

Tolerances are relative L2 errors (``||cuda - cpu|| / ||cpu||``) of every output and of all
parameter gradients together, against the same weights and inputs in fp32 on the CPU:
``EXACT`` for fp32 on CUDA with TF32 off (only summation order differs), ``AUTOCAST`` for the
device's default autocast, which rounds products to bf16 (8-bit mantissa) or fp16: bf16 autocast
on the CPU gives at most 0.016 (outputs) and 0.040 (gradients) over the presets, fp16 less.
"""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

from crossvit_mtl import create_model, list_models
from crossvit_mtl.cli import main
from crossvit_mtl.engine.precision import Placement, auto_precision, resolve
from crossvit_mtl.models import as_task_dict
from crossvit_mtl.models.layers import DropPath
from fixtures_run import tiny_config, write_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (make gpu-check on a GPU machine)")]

#: fp32 on CUDA without TF32: outputs, gradients
EXACT = (1e-4, 1e-3)
#: the device's autocast (bf16 or fp16): outputs, gradients (2.5x the CPU's bf16 errors, and more)
AUTOCAST = (0.05, 0.1)
CPU_FP32 = Placement(torch.device("cpu"), "fp32", "reference")


@pytest.fixture
def no_tf32(monkeypatch):
    """fp32 products and convolutions in full fp32 on CUDA (PyTorch's default gives convolutions TF32)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def preset_input(name: str) -> torch.Tensor:
    """Two images: the classifiers at their published 224x224, dense presets at 64x128."""
    size = (224, 224) if name.endswith("_224") else (64, 128)
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))


def forward_backward(model: torch.nn.Module, x: torch.Tensor, placement: Placement):
    """Every output and all parameter gradients (one vector) of the mean-square of the outputs, in
    training mode (batch statistics in batch norm), on the CPU in fp32."""
    model.zero_grad(set_to_none=True)
    with placement.autocast():
        out = as_task_dict(model(x.to(placement.device)))
    sum(v.float().square().mean() for v in out.values()).backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return {t: v.detach().float().cpu() for t, v in out.items()}, grads.cpu()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).norm() / want.double().norm())


def compare_to_cpu_fp32(name: str, placements: list[Placement]) -> list[dict[str, float]]:
    """Per placement, relative errors of its outputs and gradients against CPU fp32, same weights."""
    torch.manual_seed(0)
    model = create_model(name).train()
    for module in model.modules():  # stochastic depth would draw different samples per device
        if isinstance(module, DropPath):
            module.p = 0.0
    x = preset_input(name)
    want_out, want_grad = forward_backward(model, x, CPU_FP32)
    found = []
    for placement in placements:
        got_out, got_grad = forward_backward(copy.deepcopy(model).to(placement.device), x, placement)
        assert set(got_out) == set(want_out)
        assert got_grad.numel() == want_grad.numel() and torch.isfinite(got_grad).all()
        errors = {task: relative_error(got_out[task], want_out[task]) for task in want_out}
        found.append({**errors, "gradients": relative_error(got_grad, want_grad)})
    return found


def check(errors: dict[str, float], tolerance: tuple[float, float]) -> None:
    outputs, gradients = tolerance
    bad = {k: v for k, v in errors.items() if not v <= (gradients if k == "gradients" else outputs)}
    assert not bad, f"relative errors above {tolerance}: {bad}"


def test_auto_takes_the_gpu_and_names_it():
    placement = resolve()
    assert placement.device == torch.device("cuda", torch.cuda.current_device())
    assert placement.name == torch.cuda.get_device_name() and "compute capability" in placement.reason


@pytest.mark.parametrize("name", list_models())
def test_preset_forward_and_backward_on_cuda_match_cpu_fp32(name, no_tf32):
    """fp32 within ``EXACT``; the device's autocast, where it has one, within ``AUTOCAST``."""
    placements = [resolve("cuda", "fp32")] + [p for p in [resolve("cuda")] if p.precision != "fp32"]
    for placement, errors in zip(placements, compare_to_cpu_fp32(name, placements)):
        check(errors, EXACT if placement.precision == "fp32" else AUTOCAST)


def test_fit_two_steps_on_cuda_in_the_devices_precision(tmp_path):
    """bf16-mixed on GPUs from compute capability 8.0 (16-mixed before), batches pinned."""
    from crossvit_mtl.cli.train import CrossViTCLI, cli_kwargs

    config = tmp_path / "config.yaml"  # the device's own precision: none asked for
    write_config(config, tiny_config(data={"options": {"length": 8, "height": 64, "width": 128}, "tasks": None,
                                           "batch_size": 4},
                                     trainer={"precision": None, "accelerator": None, "devices": 1}))
    cli = CrossViTCLI(**cli_kwargs(), args=["fit", "--config", str(config), "--run_dir", str(tmp_path / "run")])
    trainer = cli.trainer
    major = torch.cuda.get_device_capability()[0]
    expected = "bf16-mixed" if major >= 8 else "16-mixed" if major >= 7 else "32-true"
    assert trainer.precision == auto_precision() == expected
    assert trainer.strategy.root_device.type == "cuda" and trainer.global_step == 2
    assert cli.datamodule.train_dataloader().pin_memory
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cuda_images")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (64, 128), "b.png": (80, 150), "c.jpg": (32, 64)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("mode", ["resize", "slide"])
def test_predict_on_cuda_gives_the_cpu_labels(fitted_run, images, tmp_path, mode, no_tf32, capsys):
    """fp32 on both: at least 99.5 % of the pixels get the same label."""
    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    for device in ("cpu", "cuda"):
        assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--out", str(tmp_path / device),
                     "--device", device, "--precision", "fp32", "--mode", mode, "--batch-size", "2"]) == 0
    assert f"predict on cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()}), fp32" in capsys.readouterr().out
    same = []
    for stem in ("a", "b", "c"):
        with Image.open(tmp_path / "cpu" / f"{stem}_labels.png") as cpu, \
                Image.open(tmp_path / "cuda" / f"{stem}_labels.png") as cuda:
            same.append((np.asarray(cpu) == np.asarray(cuda)).ravel())
    assert np.concatenate(same).mean() >= 0.995


def test_onnx_export_of_a_cuda_model_is_checked(fitted_run, tmp_path, no_tf32, capsys):
    from crossvit_mtl.export import check_onnx
    from crossvit_mtl.models import model_from_checkpoint

    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(path),
                 "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "export: traced on cuda:" in out and "onnxruntime vs PyTorch" in out
    model, meta = model_from_checkpoint(ckpt)
    diffs = check_onnx(model.cuda(), path, tuple(meta["image_size"]), batch=3)  # the CUDA model itself
    assert max(diffs.values()) <= 1e-4, diffs


def test_bench_case_on_cuda_times_with_events_and_counts_device_memory():
    from crossvit_mtl import bench

    device = str(resolve().device)
    case = bench.Case("crossvit_seg_tiny", (64, 128), resolve().precision, batch_size=2, repeats=2,
                      warmup=1, latency_runs=2, device=device)
    result = bench.measure_case(case)
    assert result.error is None and result.train_img_s > 0 and result.latency_ms > 0
    assert result.mem_train_mb >= result.mem_infer_mb > 0 and result.gflops_train > result.gflops_fwd
    peaks = bench.machine_peaks(device)
    assert {"fp32", "fp32 torch.mm", "fp32 torch.mm TF32", "fp32 cuDNN"} <= set(peaks)
    assert peaks[resolve().precision] > 0
