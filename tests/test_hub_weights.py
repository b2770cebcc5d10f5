"""timm's CrossViT releases by name, through a Hugging Face cache written in huggingface_hub's
layout, with the network disabled: what loads, from which file, and the one line each failure gives."""
import json
import os
import subprocess
import sys

import pytest
import torch

from crossvit_mtl import create_model
from crossvit_mtl.cli import main
from crossvit_mtl.models import PRESETS
from crossvit_mtl.models.pretrained import RELEASES, hub_repo, load_state
from crossvit_mtl.serialization import CheckpointError
from fixtures_hub import cache_repo, offline_hub, safetensors_bytes, torch_bytes
from test_pretrained import SMALL_OPTIONS, published_shapes, random_state, reference_forward, small_release

# crossvit_15_dagger_408 at a test's size: its design (dagger stems, 12-px branch on the larger
# image, CLS fusion) at widths 32/64, two stages, 48/32-px branches
DAGGER = dict(dims=(32, 64), heads=(2, 4), depth=(1, 2, 0), stages=2, img=(48, 32), patches=(12, 16))
DAGGER_OPTIONS = dict(dims=(32, 64), heads=(2, 4), stages=((1, 2, 0),) * 2, mlp_ratios=(3.0, 2.0, 1.0),
                      img_size=(48, 32), num_classes=5)


def dagger_release(seed=0):
    return random_state(published_shapes(DAGGER["dims"], DAGGER["heads"], DAGGER["depth"], (3, 2), stages=2,
                                         img=DAGGER["img"], num_classes=5, dagger=True), seed=seed)


def test_every_release_names_its_preset_and_timm_repository():
    classifiers = {n for n, p in PRESETS.items() if p["arch"] == "crossvit"}
    assert set(RELEASES.values()) == classifiers and len(RELEASES) == 11
    for name, preset in RELEASES.items():
        assert name == f"{preset}.in1k" and hub_repo(name) == (f"timm/{name}", None)
    assert hub_repo("hf-hub:timm/crossvit_9_240.in1k@abc123") == ("timm/crossvit_9_240.in1k", "abc123")
    assert hub_repo("crossvit_9_240") is None and hub_repo("weights/crossvit_9_240.in1k.pth") is None


def test_the_test_cache_is_what_huggingface_hub_reads(tmp_path, monkeypatch):
    from huggingface_hub import scan_cache_dir

    cache = offline_hub(tmp_path, monkeypatch)
    snapshot = cache_repo(cache, "timm/crossvit_9_240.in1k", {"model.safetensors": safetensors_bytes(small_release())})
    assert (snapshot / "model.safetensors").is_symlink()
    (repo,) = scan_cache_dir(cache).repos
    assert repo.repo_id == "timm/crossvit_9_240.in1k" and repo.refs["main"].commit_hash == snapshot.name
    assert [(f.file_name, f.blob_path.parent.name) for f in repo.refs["main"].files] == [("model.safetensors", "blobs")]


def test_a_dagger_408_release_by_name_fills_every_tensor_offline(tmp_path, monkeypatch):
    cache = offline_hub(tmp_path, monkeypatch)
    state = dagger_release()
    cache_repo(cache, "timm/crossvit_15_dagger_408.in1k", {"model.safetensors": safetensors_bytes(state),
                                                            "config.json": b"{}"})
    name = "hf-hub:timm/crossvit_15_dagger_408.in1k"
    model = create_model("crossvit_15_dagger_408", **DAGGER_OPTIONS)
    report = load_state(model, name, "exact")
    assert report.complete and len(report.loaded) == len(model.state_dict()) and not report.interpolated
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = reference_forward(state, x, **DAGGER, dagger=True)
        for weights in (name, "crossvit_15_dagger_408.in1k"):  # hf-hub:timm/NAME, or the release's name alone
            out = create_model("crossvit_15_dagger_408", weights=weights, **DAGGER_OPTIONS).eval()(x)
            assert ref.std() > 0.1
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_safetensors_first_else_the_pickled_file_read_weights_only(tmp_path, monkeypatch):
    cache = offline_hub(tmp_path, monkeypatch)
    first, second = small_release(), {k: v + 1 for k, v in small_release().items()}
    cache_repo(cache, "timm/crossvit_9_240.in1k", {"model.safetensors": safetensors_bytes(first),
                                                    "pytorch_model.bin": torch_bytes(second)})
    cache_repo(cache, "timm/crossvit_18_240.in1k", {"pytorch_model.bin": torch_bytes(second)})
    for name, expected in (("crossvit_9_240.in1k", first), ("crossvit_18_240.in1k", second)):
        model = create_model("crossvit_9_240", weights=name, num_classes=5, **SMALL_OPTIONS)
        assert torch.equal(model.encoder.pos_embed[0], expected["pos_embed_0"]), name


def test_a_name_not_in_the_cache_offline_is_one_line_naming_it_and_both_reasons(tmp_path, monkeypatch, capsys):
    cache = offline_hub(tmp_path, monkeypatch)
    with pytest.raises(CheckpointError) as err:
        create_model("crossvit_9_240", weights="crossvit_9_240.in1k")
    message = str(err.value)
    assert message == (f"crossvit_9_240.in1k: not in the Hugging Face cache {cache} (neither model.safetensors "
                       "nor pytorch_model.bin) and not downloaded (offline: HF_HUB_OFFLINE is set)")
    assert main(["export", "--model", "crossvit_9_240", "--weights", "hf-hub:timm/crossvit_9_240.in1k",
                 "--format", "safetensors", "--out", str(tmp_path / "o.safetensors")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "crossvit-mtl export: error: --weights hf-hub:timm/crossvit_9_240.in1k: not in the Hugging Face cache "), lines
    assert not (tmp_path / "o.safetensors").exists()


def test_without_a_network_a_cached_release_loads_without_asking_the_hub(tmp_path, monkeypatch):
    """Not offline, but the hub unreachable (a closed local port): the cache answers and no
    request is made; a name the cache lacks fails in one line saying why it was not downloaded."""
    import huggingface_hub.file_download as hub_download
    from huggingface_hub import constants

    cache = offline_hub(tmp_path, monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", lambda seconds: None)  # its retries, at once
    asked = []
    metadata = hub_download.get_hf_file_metadata
    monkeypatch.setattr(hub_download, "get_hf_file_metadata", lambda url, **kw: asked.append(url) or metadata(url, **kw))
    state = small_release()
    cache_repo(cache, "timm/crossvit_9_240.in1k", {"model.safetensors": safetensors_bytes(state)})
    model = create_model("crossvit_9_240", weights="crossvit_9_240.in1k", num_classes=5, **SMALL_OPTIONS)
    assert torch.equal(model.encoder.cls_token[1], state["cls_token_1"]) and asked == []
    with pytest.raises(CheckpointError, match=r"^crossvit_15_240\.in1k: not in the Hugging Face cache .* and not "
                                              r"downloaded \(no connection to the hub: .+\)$") as err:
        create_model("crossvit_9_240", weights="crossvit_15_240.in1k", num_classes=5, **SMALL_OPTIONS)
    assert len(str(err.value).splitlines()) == 1
    assert asked and all(url.startswith("http://127.0.0.1:9/timm/crossvit_15_240.in1k/") for url in asked)


@pytest.mark.parametrize("damage", ["not_weights", "broken_link"])
def test_a_cached_file_that_is_not_weights_is_named(tmp_path, monkeypatch, damage):
    cache = offline_hub(tmp_path, monkeypatch)
    snapshot = cache_repo(cache, "timm/crossvit_9_240.in1k", {"model.safetensors": b"<!DOCTYPE html><html>rate limited</html>"})
    if damage == "broken_link":  # the blob deleted under the snapshot's link
        (snapshot / "model.safetensors").resolve().unlink()
    with pytest.raises(CheckpointError) as err:
        create_model("crossvit_9_240", weights="crossvit_9_240.in1k", num_classes=5, **SMALL_OPTIONS)
    message = str(err.value)
    reason = "not a readable safetensors file" if damage == "not_weights" else "not in the Hugging Face cache"
    assert len(message.splitlines()) == 1 and message.startswith("crossvit_9_240.in1k: ") and reason in message, message
    if damage == "not_weights":
        assert f"{snapshot / 'model.safetensors'}: not a readable safetensors file" in message


@pytest.mark.heavy
def test_a_fresh_process_reads_the_environment_and_exports_a_release(tmp_path, monkeypatch):
    """HF_HUB_CACHE and HF_HUB_OFFLINE as a user sets them, read by huggingface_hub at import."""
    cache = offline_hub(tmp_path, monkeypatch)
    state = small_release()
    cache_repo(cache, "timm/crossvit_9_240.in1k", {"pytorch_model.bin": torch_bytes(state)})
    out = tmp_path / "w.safetensors"
    options = [f"--model-option={k}={json.dumps(v)}" for k, v in SMALL_OPTIONS.items()]
    run = subprocess.run([sys.executable, "-m", "crossvit_mtl", "export", "--model", "crossvit_9_240",
                          "--weights", "crossvit_9_240.in1k", "--model-option", "num_classes=5", *options,
                          "--format", "safetensors", "--out", str(out)], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert run.returncode == 0, run.stderr
    from crossvit_mtl.export import model_from_weights

    model, _ = model_from_weights(out)
    assert torch.equal(model.encoder.stages[1].blocks[1][1].mlp.fc2.weight, state["blocks.1.blocks.1.1.mlp.fc2.weight"])


def test_a_dense_model_at_a_releases_widths_takes_its_encoder_by_name(tmp_path, monkeypatch):
    """docs/using-a-model.md's example: crossvit_mtl_tiny configured to crossvit_tiny_240's widths,
    MLP ratios, patches, depths and fusion takes the release's whole encoder (its real names and
    shapes, random values), positions interpolated to the 96x192 grid; decoder and heads stay as
    initialised, the release's classifier unused, and the report says so."""
    cache = offline_hub(tmp_path, monkeypatch)
    state = random_state(published_shapes((96, 192), (3, 3), (1, 4, 0), (4, 4)))
    cache_repo(cache, "timm/crossvit_tiny_240.in1k", {"model.safetensors": safetensors_bytes(state)})
    options = dict(dims=[96, 192], heads=[3, 3], mlp_ratios=[4.0, 4.0, 1.0], patch_sizes=[12, 16], stages=[[1, 4, 0]] * 3,
                   fusion="cls", img_size=(96, 192))
    model = create_model("crossvit_mtl_tiny", **options)
    report = load_state(model, "crossvit_tiny_240.in1k", "partial")
    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert report.loaded == sorted(k for k in own if k.startswith("encoder."))
    assert report.initialised == sorted(k for k in own if not k.startswith("encoder."))
    assert report.unused == sorted(k for k in state if k.startswith(("norm.", "head."))) and not report.mismatched
    assert report.interpolated == ["encoder.pos_embed.0 20x20->8x16", "encoder.pos_embed.1 14x14->6x12"]
    print(f"model.pretrained crossvit_tiny_240.in1k: {report}")  # the line docs/using-a-model.md shows
    again = create_model("crossvit_mtl_tiny", weights="crossvit_tiny_240.in1k", **options)  # the whole encoder: enough
    assert torch.equal(again.encoder.stages[2].fusion.fusion[1][0].attn.q.weight, state["blocks.2.fusion.1.attn.wq.weight"])
