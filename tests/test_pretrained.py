"""Published CrossViT weights (IBM / timm naming) into the zoo, checked against an independent
forward pass written here from the published architecture and input protocol."""
import logging
import math
import re

import pytest
import torch
import torch.nn.functional as F

from crossvit_mtl import create_model
from crossvit_mtl.models.pretrained import load_state
from crossvit_mtl.serialization import CheckpointError

# The published configurations (CrossViT paper / IBM release): widths, heads, stage depths
# (small, large, fusion), MLP ratios, dagger = multi-conv patch embedding.
PUBLISHED = {
    "crossvit_tiny_240": dict(dims=(96, 192), heads=(3, 3), depth=(1, 4, 0), mlp=(4, 4)),
    "crossvit_small_240": dict(dims=(192, 384), heads=(6, 6), depth=(1, 4, 0), mlp=(4, 4)),
    "crossvit_base_240": dict(dims=(384, 768), heads=(12, 12), depth=(1, 4, 0), mlp=(4, 4)),
    "crossvit_9_240": dict(dims=(128, 256), heads=(4, 4), depth=(1, 3, 0), mlp=(3, 3)),
    "crossvit_15_240": dict(dims=(192, 384), heads=(6, 6), depth=(1, 5, 0), mlp=(3, 3)),
    "crossvit_18_240": dict(dims=(224, 448), heads=(7, 7), depth=(1, 6, 0), mlp=(3, 3)),
    "crossvit_9_dagger_240": dict(dims=(128, 256), heads=(4, 4), depth=(1, 3, 0), mlp=(3, 3), dagger=True),
    "crossvit_15_dagger_240": dict(dims=(192, 384), heads=(6, 6), depth=(1, 5, 0), mlp=(3, 3), dagger=True),
    "crossvit_18_dagger_240": dict(dims=(224, 448), heads=(7, 7), depth=(1, 6, 0), mlp=(3, 3), dagger=True),
    # fine-tuned at 384 px; timm's names give the 12-px branch's input, 408
    "crossvit_15_dagger_408": dict(dims=(192, 384), heads=(6, 6), depth=(1, 5, 0), mlp=(3, 3), dagger=True,
                                   img=(408, 384)),
    "crossvit_18_dagger_408": dict(dims=(224, 448), heads=(7, 7), depth=(1, 6, 0), mlp=(3, 3), dagger=True,
                                   img=(408, 384)),
}


def published_shapes(dims, heads, depth, mlp, stages=3, img=(240, 224), patches=(12, 16),
                     num_classes=1000, dagger=False, style="timm"):
    """Every tensor name and shape of a released CrossViT checkpoint, from its architecture."""
    shapes = {}

    def linear(name, fan_in, fan_out):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (fan_out, fan_in), (fan_out,)

    def norm(name, d):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (d,), (d,)

    sep = "_" if style == "timm" else "."
    for b, (d, p, size) in enumerate(zip(dims, patches, img)):
        shapes[f"cls_token{sep}{b}"] = (1, 1, d)
        shapes[f"pos_embed{sep}{b}"] = (1, 1 + (size // p) ** 2, d)
        if dagger:
            for j, (cin, cout, k) in enumerate([(3, d // 4, 7), (d // 4, d // 2, 3), (d // 2, d, 3)]):
                shapes[f"patch_embed.{b}.proj.{2 * j}.weight"] = (cout, cin, k, k)
                shapes[f"patch_embed.{b}.proj.{2 * j}.bias"] = (cout,)
        else:
            shapes[f"patch_embed.{b}.proj.weight"] = (d, 3, p, p)
            shapes[f"patch_embed.{b}.proj.bias"] = (d,)
    for s in range(stages):
        for b, d in enumerate(dims):
            for k in range(depth[b]):
                blk = f"blocks.{s}.blocks.{b}.{k}"
                norm(f"{blk}.norm1", d)
                linear(f"{blk}.attn.qkv", d, 3 * d)
                linear(f"{blk}.attn.proj", d, d)
                norm(f"{blk}.norm2", d)
                linear(f"{blk}.mlp.fc1", d, int(d * mlp[b]))
                linear(f"{blk}.mlp.fc2", int(d * mlp[b]), d)
            other = dims[1 - b]
            norm(f"blocks.{s}.projs.{b}.0", d)
            linear(f"blocks.{s}.projs.{b}.2", d, other)
            for k in range(max(depth[2], 1)):
                fb = f"blocks.{s}.fusion.{b}" + (f".{k}" if depth[2] else "")
                norm(f"{fb}.norm1", other)
                for w in ("wq", "wk", "wv", "proj"):
                    linear(f"{fb}.attn.{w}", other, other)
            norm(f"blocks.{s}.revert_projs.{b}.0", other)
            linear(f"blocks.{s}.revert_projs.{b}.2", other, d)
    for b, d in enumerate(dims):
        norm(f"norm.{b}", d)
        linear(f"head.{b}", d, num_classes)
    return shapes


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: 0.2 * torch.randn(s, generator=g) + (1.0 if k.endswith("norm1.weight") else 0.0)
            for k, s in shapes.items()}


def scaled_random_state(shapes, seed=0):
    """Random tensors at the scale of a trained network (weights ~ 1/sqrt(fan-in), norms near 1),
    so that logits vary with the input through every block."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, s in shapes.items():
        r = torch.randn(s, generator=g)
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or re.search(r"(norm\.\d|projs\.\d\.0)\.weight$", k):
            state[k] = 1.0 + 0.1 * r
        elif k.endswith(".weight"):
            state[k] = r / math.sqrt(math.prod(s[1:]))
        else:
            state[k] = 0.1 * r if k.endswith(".bias") else 0.5 * r
    return state


def _embed(w, x, b, p, dagger):
    """The published patch embeddings: one strided conv, or the dagger models' three convs."""
    name = f"patch_embed.{b}.proj"
    if not dagger:
        return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"], stride=p)
    # kernel 7 stride 4, then 3x3 convs reaching the patch size: stride 3 then 1 (12 px), 2 and 2 (16 px)
    strides, pads = ((3, 1), (0, 1)) if p == 12 else ((2, 2), (1, 1))
    x = F.relu(F.conv2d(x, w[f"{name}.0.weight"], w[f"{name}.0.bias"], stride=4, padding=3))
    x = F.relu(F.conv2d(x, w[f"{name}.2.weight"], w[f"{name}.2.bias"], stride=strides[0], padding=pads[0]))
    return F.conv2d(x, w[f"{name}.4.weight"], w[f"{name}.4.bias"], stride=strides[1], padding=pads[1])


def reference_forward(w, x, dims, heads, depth, stages, img, patches, dagger=False):
    """CrossViT's forward from the published tensors alone (eps 1e-6 LayerNorms), fed as the
    release feeds it: branch b always sees the image resized (bicubic) to img[b] x img[b]."""
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], w[f"{n}.weight"], w[f"{n}.bias"], 1e-6)
    lin = lambda t, n: F.linear(t, w[f"{n}.weight"], w[f"{n}.bias"])

    def attention(q, k, v, h):
        split = lambda t: t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        a = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        return (a @ v).transpose(1, 2).flatten(2)

    xs = []
    for b, (size, p) in enumerate(zip(img, patches)):
        xb = x if tuple(x.shape[-2:]) == (size, size) else F.interpolate(x, size=(size, size), mode="bicubic")
        t = _embed(w, xb, b, p, dagger)
        t = torch.cat([w[f"cls_token_{b}"].expand(len(x), -1, -1), t.flatten(2).transpose(1, 2)], 1)
        xs.append(t + w[f"pos_embed_{b}"])
    for s in range(stages):
        for b in range(2):
            for k in range(depth[b]):
                n = f"blocks.{s}.blocks.{b}.{k}"
                q, kk, v = lin(ln(xs[b], f"{n}.norm1"), f"{n}.attn.qkv").chunk(3, -1)
                xs[b] = xs[b] + lin(attention(q, kk, v, heads[b]), f"{n}.attn.proj")
                h = F.gelu(lin(ln(xs[b], f"{n}.norm2"), f"{n}.mlp.fc1"))
                xs[b] = xs[b] + lin(h, f"{n}.mlp.fc2")
        outs = []
        for b in range(2):
            cls = lin(F.gelu(ln(xs[b][:, :1], f"blocks.{s}.projs.{b}.0")), f"blocks.{s}.projs.{b}.2")
            seq = torch.cat([cls, xs[1 - b][:, 1:]], 1)
            fb = f"blocks.{s}.fusion.{b}" + (".0" if depth[2] else "")
            y = ln(seq, f"{fb}.norm1")
            att = attention(lin(y[:, :1], f"{fb}.attn.wq"), lin(y, f"{fb}.attn.wk"), lin(y, f"{fb}.attn.wv"),
                            heads[1 - b])
            cls = seq[:, :1] + lin(att, f"{fb}.attn.proj")
            cls = lin(F.gelu(ln(cls, f"blocks.{s}.revert_projs.{b}.0")), f"blocks.{s}.revert_projs.{b}.2")
            outs.append(torch.cat([cls, xs[b][:, 1:]], 1))
        xs = outs
    logits = [lin(ln(xs[b][:, 0], f"norm.{b}"), f"head.{b}") for b in range(2)]
    return torch.stack(logits).mean(0)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_every_published_classifier_maps_completely(name, monkeypatch):
    monkeypatch.setattr(torch.nn.init, "trunc_normal_", lambda t, **_: t)  # only names and shapes matter
    spec = PUBLISHED[name]
    shapes = published_shapes(spec["dims"], spec["heads"], spec["depth"], spec["mlp"], img=spec.get("img", (240, 224)),
                              dagger=spec.get("dagger", False), style="ibm" if "dagger" in name else "timm")
    model = create_model(name)
    state = {k: torch.empty(s) for k, s in shapes.items()}
    report = load_state(model, state, "exact")
    assert report.complete and not report.interpolated
    assert len(report.loaded) == len(model.state_dict())


@pytest.mark.parametrize("style,fusion_depth", [("timm", 0), ("ibm", 1)])
def test_outputs_equal_an_independent_forward_of_the_published_tensors(style, fusion_depth):
    cfg = dict(dims=(32, 64), heads=(2, 4), depth=(1, 2, fusion_depth), stages=2, img=(36, 32), patches=(12, 16))
    state = random_state(published_shapes(cfg["dims"], cfg["heads"], cfg["depth"], (3, 2), stages=2,
                                          img=cfg["img"], num_classes=5, style=style))
    model = create_model("crossvit_9_240", num_classes=5, dims=cfg["dims"], heads=cfg["heads"],
                         stages=((1, 2, fusion_depth),) * 2, mlp_ratios=(3.0, 2.0, 1.0), img_size=(36, 32))
    report = load_state(model, state, "exact")
    assert report.complete
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    timm_names = {k.replace("cls_token.", "cls_token_").replace("pos_embed.", "pos_embed_"): v for k, v in state.items()}
    with torch.no_grad():
        ref = reference_forward(timm_names, x, **cfg)
        out = model.eval()(x)
    assert ref.std() > 0.1  # the check can fail: outputs vary with the input and the weights
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["crossvit_tiny_240", "crossvit_9_dagger_240", "crossvit_15_240"])
def test_published_presets_take_the_published_input_protocol(name):
    """The released networks at full size: the 12-px branch sees 240 px, the 16-px branch 224 px,
    whatever the input (240 is the size they are evaluated at; others are resized per branch)."""
    spec = PUBLISHED[name]
    dagger = spec.get("dagger", False)
    state = scaled_random_state(published_shapes(spec["dims"], spec["heads"], spec["depth"], spec["mlp"],
                                                 dagger=dagger))
    model = create_model(name).eval()
    assert load_state(model, state, "exact").complete
    for size in [(240, 240), (224, 224)] + [(256, 192)] * (name == "crossvit_tiny_240"):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = reference_forward(state, x, spec["dims"], spec["heads"], spec["depth"], stages=3, img=(240, 224),
                                    patches=(12, 16), dagger=dagger)
            out = model(x)
        assert ref.std() > 0.1 and (ref[0] - ref[1]).abs().max() > 0.1  # logits depend on the image
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4, msg=lambda m, size=size: f"{size}: {m}")


def test_old_preset_names_are_aliases():
    model = create_model("crossvit_9_224", num_classes=5, dims=(32, 64), heads=(2, 2), stages=((1, 1, 0),))
    assert model.preset_name == "crossvit_9_240"
    assert model.encoder.branch_sizes == ((240, 240), (224, 224))
    with pytest.raises(ValueError, match=r"img_size 250x250 is not divisible by the patch size 12 of model "
                                         r"'crossvit_9_224' \(patch_sizes \[12, 16\]\)"):
        create_model("crossvit_9_224", img_size=(250, 224))


def test_dense_model_takes_the_encoder_and_reports_the_rest():
    shapes = published_shapes((32, 64), (2, 4), (1, 2, 0), (3, 2), stages=2, img=(36, 32), num_classes=5)
    state = random_state(shapes)
    common = dict(dims=(32, 64), heads=(2, 4), stages=((1, 2, 0),) * 2, mlp_ratios=(3.0, 2.0, 1.0),
                  patch_sizes=(12, 16), img_size=(48, 96))
    model = create_model("crossvit_seg_tiny", fusion="cls", kv_pool=(2, 1), **common)
    report = load_state(model, state, "partial")
    assert not [k for k in report.initialised if k.startswith("encoder.")]
    assert report.unused == sorted(k for k in shapes if k.startswith(("norm.", "head.")))
    assert report.interpolated == ["encoder.pos_embed.0 3x3->4x8", "encoder.pos_embed.1 2x2->3x6"]
    # pooled attention's q and kv are the published fused qkv, split
    qkv = state["blocks.1.blocks.0.0.attn.qkv.weight"]
    attn = model.encoder.stages[1].blocks[0][0].attn
    assert torch.equal(torch.cat([attn.q.weight, attn.kv.weight]), qkv)
    assert model(torch.randn(1, 3, 48, 96))["segmentation"].shape == (1, 8, 48, 96)

    token_fusion = create_model("crossvit_seg_tiny", **common)
    with pytest.raises(CheckpointError, match=r"left as initialised \d+: .*; unused \d+: blocks.0.fusion.0.attn"):
        load_state(token_fusion, state, "exact")
    report = load_state(token_fusion, state, "partial")
    assert any(".fusion.blocks." in k for k in report.initialised)


def test_other_class_count_is_reported_by_name():
    state = random_state(published_shapes((32, 64), (2, 4), (1, 1, 0), (3, 2), stages=1, img=(36, 32)))
    model = create_model("crossvit_9_240", num_classes=7, dims=(32, 64), heads=(2, 4), stages=((1, 1, 0),),
                         mlp_ratios=(3.0, 2.0, 1.0), img_size=(36, 32))
    before = model.head.heads[0].weight.clone()
    with pytest.raises(CheckpointError, match=r"; shape mismatch 4: head.heads.0.weight \(1000, 32\) vs \(7, 32\)"):
        load_state(model, state, "exact")
    report = load_state(model, state, "partial")
    assert not report.initialised and not report.unused and len(report.mismatched) == 4
    assert torch.equal(model.head.heads[0].weight, before)
    assert torch.equal(model.encoder.cls_token[0], state["cls_token_0"])


# --------------------------------------------------------------- one way in: create_model(weights=)
SMALL = dict(dims=(32, 64), heads=(2, 4), depth=(1, 2, 0), stages=2, img=(36, 32), patches=(12, 16))
SMALL_OPTIONS = dict(dims=(32, 64), heads=(2, 4), stages=((1, 2, 0),) * 2, mlp_ratios=(3.0, 2.0, 1.0),
                     img_size=(36, 32))


def small_release(style="timm", num_classes=5):
    return random_state(published_shapes(SMALL["dims"], SMALL["heads"], SMALL["depth"], (3, 2), stages=2,
                                         img=SMALL["img"], num_classes=num_classes, style=style))


def test_create_model_recognises_a_release_file_in_either_naming(tmp_path):
    from safetensors.torch import save_file

    state = small_release("timm")
    save_file(state, tmp_path / "timm.safetensors")  # timm's names, as its hub files are
    ibm = {k.replace("cls_token_", "cls_token.").replace("pos_embed_", "pos_embed."): v for k, v in state.items()}
    torch.save({"model": ibm}, tmp_path / "ibm.pth")  # IBM's names, inside {"model": ...}
    x = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = reference_forward(state, x, **SMALL)
        for file in ("timm.safetensors", "ibm.pth"):
            model = create_model("crossvit_9_240", weights=str(tmp_path / file), num_classes=5, **SMALL_OPTIONS)
            torch.testing.assert_close(model.eval()(x), ref, atol=1e-5, rtol=1e-5)


def test_create_model_with_another_class_count_keeps_the_encoder_and_reports_the_head(tmp_path, caplog):
    torch.save(small_release(num_classes=1000), tmp_path / "release.pth")
    with caplog.at_level("INFO", logger="crossvit_mtl"):
        model = create_model("crossvit_9_240", weights=str(tmp_path / "release.pth"), num_classes=7, **SMALL_OPTIONS)
    message = caplog.records[-1].getMessage()
    assert re.search(r"release\.pth: loaded \d+ tensors; shape mismatch 4: head\.heads\.0\.weight \(1000, 32\) vs "
                     r"\(7, 32\)", message), message
    state = torch.load(tmp_path / "release.pth")
    assert torch.equal(model.encoder.pos_embed[1], state["pos_embed_1"])


def test_create_model_refuses_a_release_of_another_network(tmp_path):

    torch.save(small_release(), tmp_path / "release.pth")
    with pytest.raises(CheckpointError, match=r"release\.pth: weights do not fit crossvit_9_240: loaded 0 tensors; "
                                              r"left as initialised \d+: .*shape mismatch \d+: encoder\.cls_token\.0 "
                                              r"\(1, 1, 32\) vs \(1, 1, 128\)"):
        create_model("crossvit_9_240", weights=str(tmp_path / "release.pth"))


@pytest.mark.parametrize("source", ["file", "hub"])
def test_a_training_config_starts_a_dense_encoder_from_a_release(tmp_path, caplog, monkeypatch, source):
    """`model.pretrained: PATH` or a release's name (read from the Hugging Face cache, offline):
    the encoder from the release, positions interpolated to the data's grid, decoder and heads as
    initialised, and the report printed."""
    from crossvit_mtl.cli import main
    from fixtures_hub import cache_repo, offline_hub, safetensors_bytes
    from fixtures_run import tiny_config, write_config

    state = small_release()
    torch.save(state, tmp_path / "release.pth")
    pretrained = str(tmp_path / "release.pth")
    if source == "hub":
        cache_repo(offline_hub(tmp_path, monkeypatch), "timm/crossvit_9_240.in1k", {"model.safetensors": safetensors_bytes(state)})
        pretrained = "hf-hub:timm/crossvit_9_240.in1k"
    options = dict(SMALL_OPTIONS, patch_sizes=[12, 16], fusion="cls", kv_pool=[1, 1], detail_channels=8,
                   decoder_channels=16, decoder_stages=1)
    options.pop("img_size")
    config = tiny_config(model={"model": "crossvit_seg_tiny", "model_options": options, "pretrained": pretrained},
                         data={"options": {"length": 2, "height": 48, "width": 96}, "tasks": ["segmentation"]},
                         trainer={"max_steps": 1, "num_sanity_val_steps": 0, "logger": False})
    write_config(tmp_path / "config.yaml", config)
    lightning_log = logging.getLogger("lightning.pytorch")  # where the command line prints it; not propagated
    lightning_log.addHandler(caplog.handler)
    try:
        assert main(["fit", "--config", str(tmp_path / "config.yaml"), "--run_dir", str(tmp_path / "run")]) == 0
    finally:
        lightning_log.removeHandler(caplog.handler)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("model.pretrained"))
    assert line.startswith(f"model.pretrained {pretrained}: ") and re.search(
        r": loaded \d+ tensors; interpolated 2: encoder\.pos_embed\.0 3x3->4x8, "
        r"encoder\.pos_embed\.1 2x2->3x6; left as initialised \d+: decoder\.", line), line
    assert line.endswith("unused 8: head.0.bias, head.0.weight, head.1.bias, head.1.weight, norm.0.bias (+3 more)")
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["pretrained"] == pretrained

    from crossvit_mtl.engine.datamodule import DenseDataModule
    from crossvit_mtl.engine.module import DenseTaskModule

    module = DenseTaskModule(model="crossvit_seg_tiny", model_options=options, pretrained=pretrained,
                             dataset_meta=DenseDataModule(**config["data"]).meta)
    fc1 = module.model.encoder.stages[1].blocks[1][1].mlp.fc1.weight
    assert torch.equal(fc1, state["blocks.1.blocks.1.1.mlp.fc1.weight"])
