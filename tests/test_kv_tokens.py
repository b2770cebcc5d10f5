"""``kv_tokens``: keys/values pooled from every patch grid to a bounded size (linear attention cost)."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from crossvit_mtl import create_model
from crossvit_mtl.models import PRESETS, layers
from crossvit_mtl.models.flops import CUSTOM_MAPPING, count_flops
from crossvit_mtl.models.layers import kv_pool_factor, pool_kv_tokens

SMALL = dict(dims=(32, 64), heads=(2, 2), decoder_channels=16)


@pytest.mark.parametrize("grid, cap, min_factor, expected", [
    ((16, 32), 512, 1, 1),    # the 8-px branch at 128x256: within the cap
    ((16, 32), 512, 2, 2),    # ... and its self-attention keeps kv_pool=2
    ((8, 16), 512, 1, 1),     # the 16-px branch at 128x256
    ((64, 128), 512, 1, 4),   # the 8-px branch at 512x1024: 16x32
    ((64, 128), 512, 2, 4),
    ((32, 64), 512, 1, 2),    # the 16-px branch at 512x1024: 16x32
    ((16, 32), 511, 1, 2),    # one token over: 8x16
    ((15, 17), 50, 1, 3),     # ceil: k=2 leaves 8x9=72, k=3 leaves 5x6=30
    ((7, 7), 16, 1, 2),       # 4x4
    ((7, 7), 15, 1, 3),       # 3x3
    ((5, 3), 1, 1, 5),        # down to one token
    ((64, 128), None, 1, 1),  # no cap: the minimum factor
    ((64, 128), None, 2, 2),
])
def test_factor_by_hand(grid, cap, min_factor, expected):
    assert kv_pool_factor(grid, cap, min_factor) == expected
    assert kv_pool_factor(tuple(torch.tensor(g) for g in grid), cap, min_factor) == expected  # traced sizes


def test_factor_refuses_a_cap_below_one():
    with pytest.raises(ValueError, match="kv_tokens must be >= 1"):
        kv_pool_factor((4, 4), 0)
    with pytest.raises(ValueError, match="kv_tokens must be >= 1, got 0"):  # the same check, at construction
        create_model("crossvit_seg_tiny", kv_tokens=0, **SMALL)


def test_pooling_keeps_cls_and_averages_in_bounds_windows():
    x = torch.randn(2, 1 + 15 * 17, 8)
    assert pool_kv_tokens(x, (15, 17), 255) is x  # factor 1: the very same tensor
    out = pool_kv_tokens(x, (15, 17), 50)
    assert out.shape == (2, 1 + 5 * 6, 8)
    assert torch.equal(out[:, 0], x[:, 0])
    grid = x[:, 1:].reshape(2, 15, 17, 8)
    torch.testing.assert_close(out[:, 1], grid[:, :3, :3].mean((1, 2)))
    torch.testing.assert_close(out[:, -1], grid[:, 12:, 15:].mean((1, 2)))  # last window is 3x2


def test_dense_presets_cap_their_keys():
    for name, cfg in PRESETS.items():
        if name.startswith(("crossvit_seg_", "crossvit_mtl_")):
            assert cfg["kv_tokens"] == (128 if "_small" in name else 512), name


@pytest.mark.parametrize("name", ["crossvit_seg_tiny", "crossvit_mtl_small"])
def test_bit_identical_below_the_cap_and_no_new_parameters(name):
    torch.manual_seed(0)
    capped = create_model(name, **{**SMALL, "kv_tokens": 512}).eval()
    uncapped = create_model(name, kv_tokens=None, **SMALL).eval()
    assert capped.encoder.stages[0].fusion.blocks[0][0].kv_tokens == 512
    state = capped.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in uncapped.state_dict().items()}
    uncapped.load_state_dict(state)
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        a, b = capped(x), uncapped(x)
    for task in a:
        assert torch.equal(a[task], b[task]), task


def _attention_calls(monkeypatch, model, size):
    """(batch, queries, keys, width) of every attention call in one forward pass."""
    calls = []
    original = layers._MultiHeadAttention.attend

    def attend(self, q, k, v):
        calls.append((q.shape[0], q.shape[1], k.shape[1], q.shape[2], self.num_heads))
        return original(self, q, k, v)

    monkeypatch.setattr(layers._MultiHeadAttention, "attend", attend)
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_MAPPING)
    with torch.no_grad(), counter:
        model.eval()(torch.randn(1, 3, *size))
    sdpa = sum(n for op, n in counter.get_flop_counts()["Global"].items() if "scaled_dot_product" in str(op))
    return calls, sdpa


@pytest.mark.parametrize("cap, size", [(128, (256, 512)), (512, (512, 1024))])
def test_every_attention_sees_at_most_cap_plus_cls_keys(monkeypatch, cap, size):
    torch.manual_seed(0)
    model = create_model("crossvit_mtl_tiny", kv_tokens=cap, **SMALL)
    calls, sdpa_flops = _attention_calls(monkeypatch, model, size)
    # per stage: one block on the 8-px branch, two on the 16-px branch, two fusion directions
    assert len(calls) == 3 * (1 + 2 + 2)
    assert max(keys for _, _, keys, _, _ in calls) <= cap + 1
    n8, n16 = (size[0] // 8) * (size[1] // 8), (size[0] // 16) * (size[1] // 16)
    assert sorted({queries for _, queries, _, _, _ in calls}) == [1 + n16, 1 + n8]  # all tokens still query
    # the FLOP counter sees the pooled keys: 2 matmuls of 2 * Lq * Lk * width each
    assert sdpa_flops == sum(4 * b * q * k * c for b, q, k, c, _ in calls)
    monkeypatch.undo()
    uncapped_model = create_model("crossvit_mtl_tiny", kv_tokens=None, **SMALL)
    uncapped, _ = _attention_calls(monkeypatch, uncapped_model, size)
    assert max(keys for _, _, keys, _, _ in uncapped) > cap + 1  # the cap did bite


def test_capped_flops_scale_about_linearly():
    ratios = {}
    for cap in (None, 512):
        model = create_model("crossvit_seg_small", kv_tokens=cap)
        ratios[cap] = count_flops(model, (512, 1024)) / count_flops(model, (128, 256))
    # 16x the pixels: 16x for linear cost; above it while the 128x256 contexts are under the cap
    assert ratios[512] < ratios[None] and ratios[512] < 20


def test_onnx_export_with_pooled_keys(tmp_path):
    pytest.importorskip("onnxruntime")
    from crossvit_mtl.export import check_onnx, export_onnx

    # at 32x64 (grids 4x8 and 2x4) a cap of 4 pools every context, the fused-qkv path included
    model = create_model("crossvit_mtl_tiny", kv_tokens=4, **SMALL).eval()
    export_onnx(model, tmp_path / "m.onnx", (32, 64))
    assert max(check_onnx(model, tmp_path / "m.onnx", (32, 64), batch=3).values()) <= 1e-4
