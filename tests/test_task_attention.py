import pytest
import torch

from crossvit_mtl.models import create_model
from crossvit_mtl.models.task_attention import CrossTaskAttention

TINY = dict(dims=(32, 64), heads=(2, 2), stages=((1, 1, 1),), mlp_ratios=(2.0, 2.0, 2.0),
            decoder_channels=16, detail_channels=8, decoder_stages=1, img_size=(32, 64))


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return create_model("crossvit_mtl_tiny", **TINY, **kwargs)


def test_shapes_and_every_parameter_gets_a_gradient():
    model = tiny(task_interaction="cross_attention")
    x = torch.randn(2, 3, 32, 64)
    out = model(x)
    assert out["segmentation"].shape == (2, 8, 32, 64)
    assert out["depth"].shape == (2, 1, 32, 64) and out["normal"].shape == (2, 3, 32, 64)
    assert out["classification"].shape == (2, 4)
    sum(v.float().square().mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_each_task_reads_the_others():
    """A task's map changes when only another task's projection changes: information crosses tasks."""
    module = CrossTaskAttention(["segmentation", "depth", "normal"], channels=16, num_heads=2, pool=2)
    module.eval()
    features = torch.randn(1, 16, 8, 16)
    before = module(features)
    assert all(v.shape == features.shape for v in before.values())
    with torch.no_grad():
        module.proj["depth"][0].weight.mul_(2.0)
    after = module(features)
    assert not torch.allclose(before["segmentation"], after["segmentation"])
    assert not torch.allclose(before["normal"], after["normal"])


def test_none_is_the_shared_map_for_every_head():
    """``none`` adds no parameters and computes what the network always did: the decoder map straight
    into each head, the classifier included (``classifier="map"``; ``"cls"``: the CLS tokens)."""
    plain, interacting = tiny(), tiny(task_interaction="cross_attention")
    assert plain.task_interaction is None
    extra = set(interacting.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("task_interaction.") for k in extra)
    plain.eval()
    x = torch.randn(2, 3, 32, 64)
    enc = plain.encoder(x)
    feats = plain.decoder(enc, x)
    out = plain(x)
    for task, head in plain.heads.items():
        expected = head(feats) if task == "classification" else head(feats, (32, 64))
        assert torch.equal(out[task], expected), task
    tokens = tiny(classifier="cls").eval()
    enc = tokens.encoder(x)
    assert torch.equal(tokens(x)["classification"], tokens.heads["classification"](enc.cls_tokens()))


def test_invalid_interaction_or_too_few_dense_tasks():
    with pytest.raises(ValueError, match="task_interaction must be one of .*got 'self_attention'"):
        tiny(task_interaction="self_attention")
    with pytest.raises(ValueError, match="at least two dense tasks"):
        create_model("crossvit_mtl_tiny", **TINY, tasks={"segmentation": 8, "classification": 4},
                     task_interaction="cross_attention")
