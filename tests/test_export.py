"""Export: safetensors round trip, ONNX checked in onnxruntime, TorchScript, and the CLI's rules."""
import json

import pytest
import torch
from safetensors import safe_open

from crossvit_mtl import create_model
from crossvit_mtl.cli import main
from crossvit_mtl.export import check_onnx, export_onnx, load_state, model_from_weights, save_weights
from crossvit_mtl.models import model_from_checkpoint
from crossvit_mtl.serialization import CheckpointError

pytest.importorskip("onnxruntime")


def test_checkpoint_exports_every_format(fitted_run, tmp_path, capsys):
    ckpt = fitted_run / "checkpoints" / "last.ckpt"
    reference, meta = model_from_checkpoint(ckpt)
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        expected = reference(x)

    weights = tmp_path / "model.safetensors"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(weights)]) == 0
    with safe_open(str(weights), "pt") as f:
        recipe = json.loads(f.metadata()["crossvit_mtl"])
    assert recipe["preset"] == "crossvit_mtl_tiny" and recipe["dataset_meta"]["name"] == meta["name"]
    rebuilt = create_model(recipe["preset"], weights=str(weights), **recipe["overrides"]).eval()
    again, again_meta = model_from_weights(weights)
    assert again_meta == meta
    with torch.no_grad():
        for model in (rebuilt, again):
            for task, value in model(x).items():
                torch.testing.assert_close(value, expected[task], rtol=0, atol=0)

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "outputs: segmentation, depth, normal, classification" in out and "onnxruntime vs PyTorch" in out
    assert "export: traced on cpu (CPU) in fp32" in out
    diffs = check_onnx(reference, onnx_path, (32, 64), batch=3)  # batch 3: the batch axis is dynamic
    assert set(diffs) == {"segmentation", "depth", "normal", "classification"} and max(diffs.values()) <= 1e-4

    ts_path = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(ts_path)]) == 0
    traced = torch.jit.load(str(ts_path))
    with torch.no_grad():
        for value, task in zip(traced(x), ("segmentation", "depth", "normal", "classification")):
            torch.testing.assert_close(value, expected[task], atol=1e-5, rtol=1e-5)

    # never overwritten without --overwrite
    before = weights.read_bytes()
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(weights)]) == 2
    assert "--overwrite" in capsys.readouterr().err and weights.read_bytes() == before
    assert main(["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(weights),
                 "--overwrite"]) == 0


def test_classifier_onnx_matches_pytorch(tmp_path):
    """Published-style branch sizes (the 12-px branch sees a larger image than the 16-px one)."""
    model = create_model("crossvit_9_240", num_classes=10, dims=(32, 64), heads=(2, 4),
                         stages=((1, 2, 0),) * 2, img_size=(36, 32)).eval()
    assert export_onnx(model, tmp_path / "cls.onnx", (32, 32)) == ["classification"]
    assert check_onnx(model, tmp_path / "cls.onnx", (32, 32), batch=3)["classification"] <= 1e-4


def test_preset_with_weights_from_elsewhere(tmp_path, capsys):
    options = ["--model-option", "num_classes=5", "--model-option", "img_size=[36, 32]",
               "--model-option", "dims=[32, 64]", "--model-option", "heads=[2, 2]"]
    source = create_model("crossvit_9_240", num_classes=5, img_size=[36, 32], dims=[32, 64], heads=[2, 2])
    save_weights(source, tmp_path / "w.safetensors")
    out = tmp_path / "again.safetensors"
    assert main(["export", "--model", "crossvit_9_240", "--weights", str(tmp_path / "w.safetensors"), *options,
                 "--format", "safetensors", "--out", str(out)]) == 0
    model, meta = model_from_weights(out)
    assert meta is None and model.preset_overrides["num_classes"] == 5
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value)
    # weights of another shape: one line naming the keys
    assert main(["export", "--model", "crossvit_9_240", "--weights", str(tmp_path / "w.safetensors"),
                 "--format", "safetensors", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "shape mismatch: encoder.cls_token.0 (1, 1, 32) vs (1, 1, 128)" in err


def test_load_state_refuses_what_it_cannot_read_safely(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    model = create_model("crossvit_9_240", num_classes=5, dims=(32, 64), heads=(2, 2))
    torch.save({"weights": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_state(model, tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_state(model, tmp_path / "junk.safetensors")
    torch.save(model.state_dict(), tmp_path / "plain.pt")  # a plain state dict is tensors only: fine
    load_state(model, tmp_path / "plain.pt")
