"""The fused optimiser step computes what PyTorch's for-loop step does, and is taken only where
PyTorch has it."""
import copy

import pytest
import torch

from crossvit_mtl import create_model
from crossvit_mtl.engine.optim import build_optimizer, fused_step, param_groups

SMALL = dict(dims=(32, 64), heads=(2, 2), decoder_channels=16)


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_the_fused_step_matches_pytorchs_for_loop(name):
    torch.manual_seed(0)
    model = create_model("crossvit_mtl_tiny", **SMALL)
    reference, start = copy.deepcopy(model), copy.deepcopy(model)
    fused = build_optimizer(model, name, 1e-2, 0.05)
    assert fused.defaults["fused"] is True
    if name == "adamw":
        plain = torch.optim.AdamW(param_groups(reference, 0.05), lr=1e-2, foreach=False)
    else:
        plain = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    for step in range(3):
        for p, q in zip(model.parameters(), reference.parameters()):
            p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(step)) * (1 + step)
            q.grad = p.grad.clone()
        fused.step()
        plain.step()
    for (key, p), q, p0 in zip(model.named_parameters(), reference.parameters(), start.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5, msg=key)
        assert (p - p0).abs().max() > 1e-3, key  # every parameter moved


def test_the_fused_step_only_where_pytorch_has_it():
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert fused_step(cpu) == {"fused": True}
    assert fused_step([torch.nn.Parameter(torch.zeros(3, device="meta"))]) == {}
    assert fused_step([]) == {}
    assert fused_step(cpu + [torch.zeros(2, dtype=torch.int64)]) == {}
