"""Using a trained model outside the library: safetensors weights, ONNX and TorchScript graphs."""
from crossvit_mtl.export.formats import check_onnx, export_onnx, export_torchscript
from crossvit_mtl.models import model_from_weights
from crossvit_mtl.models.pretrained import load_state, read_state
from crossvit_mtl.serialization import read_weights, save_weights

__all__ = ["check_onnx", "export_onnx", "export_torchscript", "load_state", "model_from_weights",
           "read_state", "read_weights", "save_weights"]
