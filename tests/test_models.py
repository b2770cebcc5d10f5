import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossvit_mtl import create_model, list_models
from crossvit_mtl.models import PRESETS, layers
from crossvit_mtl.models.decoders import DetailStem
from crossvit_mtl.models.flops import count_flops
from crossvit_mtl.models.interface import MultiTaskNetwork
from crossvit_mtl.models.layers import Attention, CrossAttention, DropPath, sincos_pos_embed

CLASSIFIERS = [n for n in list_models() if PRESETS[n]["arch"] == "crossvit"]
DENSE = [n for n in list_models() if n not in CLASSIFIERS]


def test_zoo_lists_every_family():
    assert set(CLASSIFIERS) == {"crossvit_tiny_240", "crossvit_small_240", "crossvit_base_240",
                                "crossvit_9_240", "crossvit_15_240", "crossvit_18_240",
                                "crossvit_9_dagger_240", "crossvit_15_dagger_240", "crossvit_18_dagger_240",
                                "crossvit_15_dagger_408", "crossvit_18_dagger_408"}
    for name in ("thesis_seg", "crossvit_seg_tiny", "crossvit_seg_small", "crossvit_seg_base",
                 "crossvit_mtl_tiny", "crossvit_mtl_small", "crossvit_mtl_base"):
        assert name in DENSE


# the 15 and 18 dagger presets are crossvit_9_dagger_240's design at other widths and sizes: their
# forward pass runs in test_classifiers_match_published_sizes
@pytest.mark.parametrize("name", [n for n in CLASSIFIERS if not n.startswith(("crossvit_15_dagger", "crossvit_18_dagger"))])
@pytest.mark.parametrize("size", [(224, 224), (160, 256)])
def test_classifier_shapes(name, size):
    model = create_model(name, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_classifier_branches_run_at_their_own_sizes_whatever_the_input():
    model = create_model("crossvit_9_240", num_classes=5, dims=(32, 64), heads=(2, 2), stages=((1, 1, 0),)).eval()
    seen = []
    for stem in model.encoder.patch_embed:
        stem.register_forward_hook(lambda m, a, o: seen.append((tuple(a[0].shape[-2:]), tuple(o.shape[-2:]))))
    x = torch.rand(1, 3, 240, 240)
    for size in [(240, 240), (224, 224), (160, 256)]:
        seen.clear()
        with torch.no_grad():
            model(torch.nn.functional.interpolate(x, size=size, mode="bilinear"))
        assert seen == [((240, 240), (20, 20)), ((224, 224), (14, 14))], size
    # at 240 px the 12-px branch takes the image as it is, the 16-px branch its bicubic 224-px copy
    seen_inputs = []
    for stem in model.encoder.patch_embed:
        stem.register_forward_hook(lambda m, a, o: seen_inputs.append(a[0]))
    with torch.no_grad():
        model(x)
    assert torch.equal(seen_inputs[0], x)
    torch.testing.assert_close(seen_inputs[1], torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic"))


@pytest.mark.parametrize("name", DENSE)
@pytest.mark.parametrize("size", [(128, 256), (96, 160)])
def test_dense_shapes_and_constraints(name, size):
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    tasks = PRESETS[name].get("tasks", {"segmentation": PRESETS[name].get("num_classes")})
    assert set(out) == set(tasks)
    for task, channels in tasks.items():
        expected = (2, channels) if task == "classification" else (2, channels, *size)
        assert out[task].shape == expected, task
    if "depth" in out:
        assert (out["depth"] > 0).all()
    if "normal" in out:
        torch.testing.assert_close(out["normal"].norm(dim=1), torch.ones(2, *size), atol=1e-5, rtol=0)


# Published sizes (Chen et al. 2021): parameters (M) and forward GMACs at 224x224 (the 408-px
# models, fine-tuned at 384: at 384x384).
PUBLISHED = {"crossvit_tiny_240": (6.9, 1.6), "crossvit_small_240": (26.7, 5.6),
             "crossvit_base_240": (104.7, 21.2), "crossvit_9_240": (8.6, 1.8),
             "crossvit_15_240": (27.4, 5.8), "crossvit_18_240": (43.3, 9.0),
             "crossvit_9_dagger_240": (8.7, 1.9), "crossvit_15_dagger_240": (28.2, 6.1),
             "crossvit_18_dagger_240": (44.3, 9.5), "crossvit_15_dagger_408": (28.5, 21.4),
             "crossvit_18_dagger_408": (44.6, 32.4)}


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_match_published_sizes(name):
    params_m, gmacs = PUBLISHED[name]
    with torch.device("meta"):  # counted from shapes: the same figures (test_flops_on_meta_are_those_computed)
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, rel=0.02)
    assert count_flops(model, (224, 224)) / 2e9 == pytest.approx(gmacs, rel=0.05)


SMALL_VARIANTS = {
    "crossvit_9_240": dict(num_classes=5, dims=(32, 64), heads=(2, 2), stages=((1, 1, 0),) * 2),
    "crossvit_9_dagger_240": dict(num_classes=5, dims=(32, 64), heads=(2, 2), stages=((1, 1, 0),)),
    "thesis_seg": dict(embed_dim=32, num_heads=4, decoder_channels=8),
    "crossvit_seg_tiny": dict(fusion="cls"),
    "crossvit_mtl_tiny": dict(),
}


@pytest.mark.parametrize("name", sorted(SMALL_VARIANTS))
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL_VARIANTS[name]).train()
    size = (224, 224) if name.startswith("crossvit_9") else (128, 256)
    out = model(torch.randn(2, 3, *size))
    outs = out.values() if isinstance(out, dict) else [out]
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_thesis_intermediate_grids():
    model = create_model("thesis_seg", decoder_channels=16).eval()
    seen = {}
    enc = model.encoder
    for i, stem in enumerate(enc.patch_embed):
        stem.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"stem{i}", o.shape))
    enc.stages[0].register_forward_hook(lambda m, a, o: seen.__setitem__("tokens", [t.shape for t in o]))
    for i, dec in enumerate(model.decoders):
        dec.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(f"dec{i}", (a[0].shape, o.shape)))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 256))
    assert seen["stem0"] == (1, 256, 16, 32) and seen["stem1"] == (1, 256, 8, 16)
    # 512 and 128 patch tokens, each with its CLS token in front
    assert seen["tokens"] == [(1, 513, 256), (1, 129, 256)]
    assert seen["dec0"] == ((1, 256, 16, 32), (1, 16, 128, 256))
    assert seen["dec1"] == ((1, 256, 8, 16), (1, 16, 128, 256))
    assert [d.num_upsamplings for d in model.decoders] == [3, 4]
    assert out["segmentation"].shape == (1, 8, 128, 256)


def test_thesis_default_widths():
    model = create_model("thesis_seg")
    assert model.decoders[0].up[0].out_channels == 256
    assert create_model("thesis_seg", decoder_channels=128).decoders[1].up[0].out_channels == 128
    deep = create_model("thesis_seg", depth=2, cross_depth=3)
    assert len(deep.encoder.stages[0].blocks[0]) == 2
    assert len(deep.encoder.stages[0].fusion.fusion[0]) == 3


def _reference_attention(q, k, v, heads):
    b, n, c = q.shape
    d = c // heads
    split = lambda t: t.reshape(b, t.shape[1], heads, d).transpose(1, 2)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, c)


def test_self_attention_matches_explicit_softmax_float64():
    torch.manual_seed(0)
    attn = Attention(48, num_heads=6).double()
    x = torch.randn(2, 17, 48, dtype=torch.float64)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    expected = attn.proj(_reference_attention(q, k, v, 6))
    torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=0)


def test_cross_attention_matches_explicit_softmax_float64():
    torch.manual_seed(0)
    attn = CrossAttention(32, num_heads=4, context_dim=24).double()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    ctx = torch.randn(2, 11, 24, dtype=torch.float64)
    k, v = attn.kv(ctx).chunk(2, dim=-1)
    expected = attn.proj(_reference_attention(attn.q(x), k, v, 4))
    out = attn(x, ctx)
    assert out.shape == (2, 5, 32)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


PER_SAMPLE = 3 * 33 * 40 * 4  # fp32 score bytes of one sample below: 3 heads, 33 queries, 40 keys


@pytest.mark.parametrize("chunk_bytes, max_bytes, fused_calls, explicit_calls", [
    (None, None, 0, 1),                      # the defaults: all three samples at once
    (PER_SAMPLE, None, 0, 3),                # one sample per chunk
    (2 * PER_SAMPLE, None, 0, 2),            # chunks of 2 and 1
    (PER_SAMPLE - 1, None, 1, 0),            # one sample's scores too large for a chunk
    (None, 3 * PER_SAMPLE - 1, 1, 0),        # the call's scores too large to keep
])
def test_cpu_bf16_attention_matches_float64_forward_and_backward(monkeypatch, chunk_bytes, max_bytes,
                                                                 fused_calls, explicit_calls):
    """bf16 attention runs as explicit matrix products in chunks of samples, or as the fused
    kernel when the scores are too large; every way must agree with a float64 softmax
    to bf16 accuracy, gradients included."""
    calls = {"fused": 0, "explicit": 0}
    fused, explicit = torch.nn.functional.scaled_dot_product_attention, layers._explicit_attention

    def count(name, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return counted

    monkeypatch.setattr(layers.F, "scaled_dot_product_attention", count("fused", fused))
    monkeypatch.setattr(layers, "_explicit_attention", count("explicit", explicit))
    if chunk_bytes:
        monkeypatch.setattr(layers, "SCORE_CHUNK_BYTES", chunk_bytes)
    if max_bytes:
        monkeypatch.setattr(layers, "SCORE_MAX_BYTES", max_bytes)
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 3, n, 48).to(torch.bfloat16).requires_grad_() for n in (33, 40, 40))
    grad_out = torch.randn(3, 3, 33, 48)
    out = layers.attention(q, k, v)
    out.float().backward(grad_out)
    assert out.dtype == torch.bfloat16 and calls == {"fused": fused_calls, "explicit": explicit_calls}

    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = (ref[0] @ ref[1].transpose(-1, -2) / math.sqrt(48)).softmax(-1) @ ref[2]
    expected.backward(grad_out.double())
    scale = lambda t: t.abs().max().item()
    torch.testing.assert_close(out.double(), expected, atol=0.01 * scale(expected), rtol=0)
    for mine, theirs in zip((q, k, v), ref):
        torch.testing.assert_close(mine.grad.double(), theirs.grad, atol=0.01 * scale(theirs.grad), rtol=0)


def test_cpu_bf16_short_attention_dropout_is_unbiased():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 8).to(torch.bfloat16) for n in (4, 16, 16))
    clean = layers.attention(q, k, v).double()
    draws = torch.stack([layers.attention(q, k, v, dropout_p=0.5) for _ in range(4000)]).double()
    assert (draws[0] - clean).abs().max() > 0.05  # probabilities were dropped
    torch.testing.assert_close(draws.mean(0), clean, atol=0.05 * clean.abs().max().item(), rtol=0)


def test_same_seed_same_weights_and_outputs():
    x = torch.randn(1, 3, 128, 256)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model("crossvit_mtl_tiny").eval()
        with torch.no_grad():
            outs.append((model.state_dict(), model(x)))
    for key in outs[0][0]:
        assert torch.equal(outs[0][0][key], outs[1][0][key]), key
    for task in outs[0][1]:
        assert torch.equal(outs[0][1][task], outs[1][1][task]), task
    torch.manual_seed(124)
    other = create_model("crossvit_mtl_tiny").state_dict()
    assert not torch.equal(other["encoder.pos_embed.0"], outs[0][0]["encoder.pos_embed.0"])


def test_size_not_divisible_names_both_numbers():
    model = create_model("crossvit_seg_tiny").eval()
    with pytest.raises(ValueError, match=r"input size 120x256 is not divisible by the patch size 16"):
        model(torch.randn(1, 3, 120, 256))


def test_unknown_override_and_unknown_model_are_refused_by_name():
    with pytest.raises(ValueError, match=r"no option 'num_clases'"):
        create_model("crossvit_seg_tiny", num_clases=3)
    with pytest.raises(ValueError, match=r"unknown model 'crossvit_huge'"):
        create_model("crossvit_huge")
    with pytest.raises(ValueError, match=r"unknown task 'edges'"):
        create_model("crossvit_mtl_tiny", tasks={"edges": 1})
    with pytest.raises(ValueError, match=r"fusion must be one of"):
        create_model("crossvit_seg_tiny", fusion="concat")


def test_mtl_tasks_chosen_at_creation():
    model = create_model("crossvit_mtl_tiny", tasks={"depth": 1, "classification": 10}).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 128))
    assert set(out) == {"depth", "classification"}
    assert out["classification"].shape == (3, 10) and out["depth"].shape == (3, 1, 64, 128)


def test_droppath_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(0)
    dp = DropPath(0.25)
    x = torch.ones(4000, 3, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    values = per_sample.unique()
    assert len(values) == 2 and values[0] == 0.0 and values[1].item() == pytest.approx(1 / 0.75)
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)
    assert torch.equal(dp.eval()(x), x)


def test_sincos_positions_are_distinct_and_bounded():
    pos = sincos_pos_embed(16, 32, 64)
    assert pos.shape == (512, 64)
    assert pos.abs().max() <= 1.0
    assert torch.unique(pos, dim=0).shape[0] == 512


def test_seg_small_is_at_most_a_quarter_of_thesis_flops():
    with torch.device("meta"):
        small = count_flops(create_model("crossvit_seg_small"), (128, 256))
        thesis = count_flops(create_model("thesis_seg"), (128, 256))
    assert small <= thesis / 4


@pytest.mark.parametrize("name", ["crossvit_9_dagger_240", "crossvit_mtl_tiny", "thesis_seg"])
def test_flops_on_meta_are_those_computed(name):
    """A model built on the meta device has the same parameters and counts the same forward FLOPs
    as the one that computes: `crossvit-mtl models` and the size tests count on meta. (Not the
    training FLOPs: the meta device's backward takes other kernels, and bench counts on real ones.)"""
    options = SMALL_VARIANTS.get(name, {})
    real = create_model(name, **options)
    with torch.device("meta"):
        meta = create_model(name, **options)
    assert [(n, p.shape) for n, p in meta.named_parameters()] == [(n, p.shape) for n, p in real.named_parameters()]
    assert all(p.is_meta for p in meta.parameters())
    assert count_flops(meta, (96, 160)) == count_flops(real, (96, 160)) > 0


@pytest.mark.parametrize("metres", [0.5, 10.6, 19.99, 20.0, 150.0])
def test_depth_head_starts_at_the_median_depth_of_its_targets(metres):
    from crossvit_mtl.models.heads import DenseHead
    from crossvit_mtl.tasks import get_task

    head = DenseHead("depth", 8, 1)
    nn.init.zeros_(head.conv[-1].weight)  # the output is the bias alone
    out = head(torch.randn(2, 8, 4, 8), (8, 16))
    assert not torch.allclose(out, torch.full_like(out, metres))
    target = torch.tensor([0.0, metres / 2, metres, metres, 3 * metres]).view(1, 1, 1, 5)  # 0: invalid, left out
    bias, said = get_task("depth").initial_bias(target)
    assert f"starts at {metres:.3g}" in said
    head.set_output_bias(bias)
    torch.testing.assert_close(head(torch.randn(2, 8, 4, 8), (8, 16)), torch.full((2, 1, 8, 16), metres),
                               rtol=1e-5, atol=1e-5)
    assert get_task("depth").initial_bias(torch.zeros(1, 1, 2, 2)) is None  # no valid depth: as initialised
    with pytest.raises(ValueError, match="must be finite, got nan"):
        head.set_output_bias(float("nan"))


def test_refining_heads_start_as_upsampling_and_learn_at_stride_two():
    """The stride-2 refinement adds a correction that starts at zero: until trained, a refining
    head gives its plain output upsampled x2 then to the input size; its convolutions train."""
    torch.manual_seed(0)
    options = dict(dims=(32, 64), heads=(2, 2), stages=((1, 1, 1),), decoder_stages=1, decoder_channels=16,
                   detail_channels=8)
    model = create_model("crossvit_mtl_tiny", refine_heads=True, **options).eval()
    x = torch.randn(2, 3, 32, 64)
    enc = model.encoder(x)
    fmap, half = model.decoder.forward_both(enc, x)
    assert half.shape == (2, 4, 16, 32) and fmap.shape == (2, 16, 8, 16)  # stride 2 and stride 4
    out = model(x)
    for task in ("segmentation", "depth", "normal"):
        head = model.heads[task]
        plain = F.interpolate(F.interpolate(head.conv(fmap), size=(16, 32), mode="bilinear", align_corners=False),
                              size=(32, 64), mode="bilinear", align_corners=False)
        from crossvit_mtl.tasks import get_task
        torch.testing.assert_close(out[task], get_task(task).finalize(plain), rtol=1e-5, atol=1e-5)
    model.train()
    sum(v.float().square().mean() for v in model(x).values()).backward()
    last = model.heads["segmentation"].refine[-1]
    assert last.weight.grad.abs().sum() > 0  # the zero correction is trained from the first step
    with pytest.raises(ValueError, match="refine_heads reads the detail stem's stride-2 features"):
        create_model("crossvit_mtl_tiny", refine_heads=True, **{**options, "detail_channels": 0})


def test_detail_stem_blocks_widen_its_view_by_eight_pixels_each():
    """Each residual block at stride 4 lets one image pixel reach 2 more stride-4 positions on
    each axis (8 px of view each side); the stride-2 features the heads refine with stay as they were."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    nudged = x.clone()
    nudged[..., 32, 32] += 1.0
    reach, halves = {}, {}
    for depth in (0, 1, 2):
        torch.manual_seed(0)  # the same two strided convolutions for every depth
        stem = DetailStem(3, 8, depth).eval()
        assert len(stem.blocks) == depth
        with torch.no_grad():
            out, halves[depth] = stem.forward_both(x)
            out2 = stem(nudged)
        assert out.shape == (1, 8, 16, 16) and halves[depth].shape == (1, 4, 32, 32)
        changed = (out2 - out).abs().amax(dim=(0, 1)) > 0
        reach[depth] = (int(changed.any(1).sum()), int(changed.any(0).sum()))  # rows, columns
    torch.testing.assert_close(halves[2], halves[0])
    assert reach[1] == (reach[0][0] + 2, reach[0][1] + 2) and reach[2] == (reach[0][0] + 4, reach[0][1] + 4)
    with pytest.raises(ValueError, match="detail_depth must be >= 0, got -1"):
        create_model("crossvit_mtl_tiny", detail_depth=-1)


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_training_flops_of_grouped_convolutions_by_hand(groups):
    """Forward, then the input and weight gradients, each as many multiply-adds as the forward;
    the first layer, whose input needs no gradient, only its weight gradient."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups))
    first, second = 2 * 64 * 16 * 3, 2 * 64 * 16 * 9 * 16 // groups  # 8x8 pixels
    assert count_flops(model, (8, 8)) == first + second
    assert count_flops(model, (8, 8), backward=True) == 2 * first + 3 * second


@pytest.mark.parametrize("options", [{}, {"refine_heads": True}, {"classifier": "cls"},
                                     {"task_interaction": "cross_attention"}],
                         ids=["plain", "refining_heads", "cls_classifier", "task_interaction"])
def test_the_engines_interface_splits_every_dense_network_into_trunk_and_heads(options):
    """What gradient methods and head initialisation ask of a network (models.interface): the
    forward is the heads on the trunk's features, every task's features are a tuple of tensors,
    and the heads' parameters are the task's own; the classifier and thesis network offer none."""
    torch.manual_seed(0)
    tasks = {"segmentation": 5, "depth": 1, "classification": 3}
    model = create_model("crossvit_mtl_tiny", tasks=tasks, dims=(32, 64), heads=(2, 2), stages=((1, 1, 1),),
                         decoder_stages=1, decoder_channels=16, detail_channels=8, **options).eval()
    assert isinstance(model, MultiTaskNetwork)
    x = torch.randn(2, 3, 32, 64)
    features = model.forward_features(x)
    assert set(features) == set(tasks)
    for task, feats in features.items():
        assert isinstance(feats, tuple) and all(isinstance(f, torch.Tensor) for f in feats), task
    assert len(features["segmentation"]) == (2 if options.get("refine_heads") else 1)
    assert len(features["classification"]) == (2 if options.get("classifier") == "cls" else 1)
    split, whole = model.forward_heads(features, (32, 64)), model(x)
    assert all(torch.equal(split[t], whole[t]) for t in tasks)
    head_params = {id(p) for t in tasks for p in model.head_parameters(t)}
    assert head_params == {id(p) for p in model.heads.parameters()}
    model.set_output_bias("depth", 2.0)
    assert torch.all(model.heads["depth"].conv[-1].bias == 2.0)
    with pytest.raises(ValueError, match="'classification' has no dense head"):
        model.set_output_bias("classification", 0.0)
    assert not isinstance(create_model("crossvit_tiny_240", num_classes=3), MultiTaskNetwork)
    assert not isinstance(create_model("thesis_seg", embed_dim=32, num_heads=2, decoder_channels=8), MultiTaskNetwork)


def test_a_dense_heads_upsampled_output_is_float32_under_bf16_autocast():
    """The losses and metrics read float32: the head upsamples its bf16 map in float32 rather than
    writing a bf16 map at the input size for the loss to cast again."""
    from crossvit_mtl.models.heads import DenseHead

    torch.manual_seed(0)
    head = DenseHead("segmentation", 8, 5).eval()
    x = torch.randn(2, 8, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        small = head.conv(x)
        out = head(x, (32, 64))
    assert small.dtype == torch.bfloat16 and out.dtype == torch.float32 and out.shape == (2, 5, 32, 64)
    expected = F.interpolate(small.float(), size=(32, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
