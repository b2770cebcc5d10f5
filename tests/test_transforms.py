"""Task-consistent augmentation: geometry, depth scaling, normals, colour, config checks."""
from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser

from crossvit_mtl.data.common import IGNORE_INDEX, DatasetInfo
from crossvit_mtl.data.transforms import (
    DEFAULT_EVAL,
    DEFAULT_TRAIN,
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomScaleCrop,
    Resize,
    build_transforms,
)

H, W = 32, 48
INFO = DatasetInfo(name="t", tasks=("segmentation", "depth", "normal", "classification"),
                   class_names=tuple("abcd"), scene_classes=("x", "y"))


def make_sample(seed: int = 0, h: int = H, w: int = W) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 4, (h, w), generator=g)
    seg[:3] = IGNORE_INDEX
    depth = torch.rand(1, h, w, generator=g) * 20 + 0.5
    depth[:, :, :5] = 0.0
    normal = torch.nn.functional.normalize(torch.randn(3, h, w, generator=g), dim=0)
    normal[:, -4:] = 0.0
    return {"image": torch.rand(3, h, w, generator=g), "segmentation": seg, "depth": depth,
            "normal": normal, "classification": torch.tensor(1)}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


def assert_normals_unit(sample: dict) -> None:
    n = sample["normal"]
    valid = n.abs().sum(0) > 0
    assert valid.any()
    # float16 (how training hands normals over) keeps 11 significant bits: |n| within 2e-3
    atol = 2e-3 if n.dtype == torch.float16 else 1e-5
    torch.testing.assert_close(n.float().norm(dim=0)[valid], torch.ones(int(valid.sum())), atol=atol, rtol=0)


def test_flip_twice_is_identity_bit_exact():
    s = make_sample()
    flip = RandomHorizontalFlip(p=1.0)
    once = flip(s)
    assert not torch.equal(once["image"], s["image"])
    assert_same(flip(once), s)


def test_flip_mirrors_maps_and_negates_normal_x():
    s = make_sample()
    out = RandomHorizontalFlip(p=1.0)(s)
    for k in ("image", "segmentation", "depth"):
        assert torch.equal(out[k], s[k].flip(-1)), k
    assert torch.equal(out["normal"][0], -s["normal"][0].flip(-1))
    assert torch.equal(out["normal"][1:], s["normal"][1:].flip(-1))
    assert torch.equal(out["classification"], s["classification"])
    assert_same(RandomHorizontalFlip(p=0.0)(s), s)


def test_inputs_are_not_modified():
    s = make_sample()
    copy = {k: v.clone() for k, v in s.items()}
    for t in (RandomHorizontalFlip(1.0), RandomScaleCrop((1.5,)), ColorJitter(0.5, 0.5, 0.5, 0.2),
              Normalize(INFO.mean, INFO.std), Resize((16, 24))):
        t(s)
    assert_same(s, copy)


def test_scale_crop_with_scale_one_is_identity():
    s = make_sample()
    assert_same(RandomScaleCrop(scales=(1.0,))(s), s)


@pytest.mark.parametrize("kind, factor", [("metric", 1 / 2), ("disparity", 2.0)])
def test_scale_crop_hand_made_depth(kind, factor):
    # s = 2 on a 4x4 map: a 2x2 window, each source pixel becomes a 2x2 block.
    depth = torch.tensor([[1.0, 2.0, 3.0, 0.0],
                          [4.0, 0.0, 6.0, 8.0],
                          [9.0, 10.0, 0.0, 12.0],
                          [14.0, 16.0, 18.0, 20.0]])[None]
    seg = torch.tensor([[0, 1, 2, 3], [1, IGNORE_INDEX, 3, 0], [2, 3, 0, 1], [3, 0, 1, IGNORE_INDEX]])
    s = {"depth": depth, "segmentation": seg, "image": torch.rand(3, 4, 4)}
    torch.manual_seed(0)
    t = RandomScaleCrop(scales=(2.0,), meta={"depth_kind": kind})
    seen = set()
    for _ in range(30):
        out = t(s)
        assert out["image"].shape == (3, 4, 4)
        matches = [
            (top, left) for top in range(3) for left in range(3)
            if torch.equal(out["depth"][0], _blocks(depth[0, top:top + 2, left:left + 2]) * factor)
            and torch.equal(out["segmentation"], _blocks(seg[top:top + 2, left:left + 2]))
        ]
        assert matches, out
        seen.update(matches)
    assert len(seen) > 3  # the window really moves


def _blocks(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, 0).repeat_interleave(2, 1)


@pytest.mark.parametrize("kind", ["metric", "disparity"])
@pytest.mark.parametrize("scale", [1.2, 1.5, 2.5])
def test_scale_crop_copies_labels_depth_and_normals(kind, scale):
    torch.manual_seed(1)
    s = make_sample()
    labels = set(s["segmentation"].unique().tolist())
    src_depth = s["depth"] / scale if kind == "metric" else s["depth"] * scale
    depths = set(src_depth.unique().tolist())
    normals = {tuple(v) for v in s["normal"].flatten(1).T.tolist()}
    t = RandomScaleCrop(scales=(scale,), meta={"depth_kind": kind})
    for _ in range(5):
        out = t(s)
        assert out["segmentation"].dtype == torch.int64 and out["segmentation"].shape == (H, W)
        assert set(out["segmentation"].unique().tolist()) <= labels  # nothing interpolated
        assert out["depth"].shape == (1, H, W)
        assert set(out["depth"].unique().tolist()) <= depths  # 0 stays 0, valid values scaled
        assert {tuple(v) for v in out["normal"].flatten(1).T.tolist()} <= normals
        assert_normals_unit(out)
        assert out["classification"] is s["classification"]


def test_invalid_depth_region_stays_zero_and_exactly_scaled():
    depth = torch.full((1, H, W), 3.0)
    depth[:, :, : W // 2] = 0.0  # any (H/1.5, W/1.5) window sees both halves
    torch.manual_seed(3)
    for kind, value in (("metric", 2.0), ("disparity", 4.5)):
        out = RandomScaleCrop(scales=(1.5,), meta={"depth_kind": kind})({"depth": depth})
        assert set(out["depth"].unique().tolist()) == {0.0, value}


def test_normals_unit_after_every_transform_and_composition():
    torch.manual_seed(0)
    s = make_sample()
    transforms = [RandomScaleCrop(), RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.4, 0.1),
                  Normalize(INFO.mean, INFO.std), Resize((20, 30)),
                  build_transforms(INFO, train=True), build_transforms(INFO, train=False, config={"size": 16})]
    for t in transforms:
        for _ in range(5):
            assert_normals_unit(t(s))


def test_jitter_leaves_other_keys_untouched_and_stays_in_range():
    torch.manual_seed(0)
    s = make_sample()
    out = ColorJitter(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.3)(s)
    for k in ("segmentation", "depth", "normal", "classification"):
        assert out[k] is s[k]
    assert out["image"].shape == s["image"].shape and out["image"].dtype == torch.float32
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert not torch.equal(out["image"], s["image"])


def test_jitter_single_steps_match_their_formulas():
    # colours within 0.1 of mid-grey: no step below can push a channel past 0 or 1 (a hue turn moves
    # a channel by at most 0.32 here), so no clipping bends the formulas, whatever the draw
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4
    grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    torch.manual_seed(0)
    out = ColorJitter(brightness=0.3)({"image": img})["image"]
    f = out[0, 0, 0] / img[0, 0, 0]
    torch.testing.assert_close(out, (img * f).clamp(0, 1))
    torch.manual_seed(0)
    out = ColorJitter(saturation=0.9)({"image": img})["image"]
    # saturation blends towards grey: grey level is preserved
    torch.testing.assert_close(0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2], grey, atol=1e-5, rtol=0)
    torch.manual_seed(0)
    out = ColorJitter(contrast=0.9)({"image": img})["image"]
    # contrast blends towards the mean grey: the mean grey is preserved
    out_grey = 0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2]
    torch.testing.assert_close(out_grey.mean(), grey.mean(), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    out = ColorJitter(hue=0.5)({"image": img})["image"]
    # a hue rotation keeps the luma (Y of YIQ)
    torch.testing.assert_close(0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2], grey, atol=1e-4, rtol=0)


def test_normalize_matches_formula():
    s = make_sample()
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = Normalize(mean, std)(s)
    expected = (s["image"] - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(out["image"], expected)
    for k in ("segmentation", "depth", "normal", "classification"):
        assert out[k] is s[k]
    with pytest.raises(ValueError):
        Normalize(mean, (1.0, 0.0, 1.0))


def test_resize_shapes_dtypes_and_values():
    s = make_sample()
    out = Resize((16, 24))(s)
    assert out["image"].shape == (3, 16, 24) and out["segmentation"].shape == (16, 24)
    assert out["depth"].shape == (1, 16, 24) and out["normal"].shape == (3, 16, 24)
    assert out["segmentation"].dtype == torch.int64
    assert set(out["segmentation"].unique().tolist()) <= set(s["segmentation"].unique().tolist())
    # depth values unchanged (nearest copies of the source values)
    assert set(out["depth"].unique().tolist()) <= set(s["depth"].unique().tolist())
    assert_same(Resize((H, W))(s), s)


def test_absent_keys_are_left_alone():
    only_depth = {"depth": torch.rand(1, H, W)}
    torch.manual_seed(0)
    for t in (build_transforms(INFO, train=True), build_transforms(INFO, train=False, config={"size": 8})):
        out = t(dict(only_depth))
        assert out.keys() == {"depth"}
    cls_only = {"classification": torch.tensor(0)}
    assert build_transforms(INFO, train=True)(cls_only) == cls_only


def test_reproducible_under_manual_seed():
    s = make_sample()
    t = build_transforms(INFO, train=True, config={"hue": 0.1})
    torch.manual_seed(123)
    a = [t(s) for _ in range(4)]
    torch.manual_seed(123)
    b = [t(s) for _ in range(4)]
    for x, y in zip(a, b):
        assert_same(x, y)
    assert not all(torch.equal(a[0]["image"], x["image"]) for x in a[1:])


def test_scale_crop_drops_a_whole_view_class_only_when_it_crops():
    sample = make_sample()
    whole_view = RandomScaleCrop((1.5,), meta={"crop_keeps_class": False})
    cropped = whole_view(sample)
    assert cropped["classification"].item() == IGNORE_INDEX and cropped["classification"].dtype == torch.int64
    assert sample["classification"].item() == 1  # the input is left alone
    assert RandomScaleCrop((1.0,), meta={"crop_keeps_class": False})(sample)["classification"].item() == 1  # no crop, no doubt
    assert RandomScaleCrop((1.5,), meta={"crop_keeps_class": True})(sample)["classification"].item() == 1  # object classes
    # the dense maps are cropped exactly as with an object class
    torch.manual_seed(3)
    a = whole_view(sample)
    torch.manual_seed(3)
    b = RandomScaleCrop((1.5,))(sample)
    assert torch.equal(a["segmentation"], b["segmentation"]) and torch.equal(a["depth"], b["depth"])
    # build_transforms takes the data set's word for it
    layout = DatasetInfo(name="l", tasks=("classification",), scene_classes=("x", "y"), crop_keeps_class=False)
    assert build_transforms(layout, train=True).transforms[0].meta["crop_keeps_class"] is False
    assert build_transforms(INFO, train=True).transforms[0].meta["crop_keeps_class"] is True


def test_build_transforms_pipelines():
    train = build_transforms(INFO, train=True)
    names = [type(t).__name__ for t in train.transforms]
    assert names == ["RandomScaleCrop", "RandomHorizontalFlip", "ColorJitter", "Normalize", "CastFloats"]
    assert train.transforms[0].scales == DEFAULT_TRAIN["scales"] == (1.0, 1.2, 1.5)
    mtan = build_transforms(INFO, train=True, config={"brightness": 0, "contrast": 0, "saturation": 0})
    assert [type(t).__name__ for t in mtan.transforms] == ["RandomScaleCrop", "RandomHorizontalFlip", "Normalize",
                                                           "CastFloats"]
    disp = DatasetInfo(name="cs", tasks=("depth",), depth_kind="disparity")
    assert build_transforms(disp, train=True).transforms[0].meta["depth_kind"] == "disparity"
    assert DEFAULT_EVAL == {"size": None, "pad_to": None, "size_divisor": 1}
    assert [type(t).__name__ for t in build_transforms(INFO, train=False).transforms] == ["Normalize", "CastFloats"]
    evals = build_transforms(INFO, train=False, config={"size": (16, 24)})
    assert [type(t).__name__ for t in evals.transforms] == ["Resize", "Normalize", "CastFloats"]
    assert isinstance(evals, Compose) and "Resize" in repr(evals)


def test_training_hands_over_half_precision_and_evaluation_float32():
    sample = make_sample()
    sample["normal"] = sample["normal"].half()  # as a cache stores them
    out = build_transforms(INFO, train=True)(sample)
    assert out["image"].dtype == out["normal"].dtype == torch.float16
    assert out["depth"].dtype == torch.float32 and out["segmentation"].dtype == sample["segmentation"].dtype
    evaluated = build_transforms(INFO, train=False)(sample)
    assert evaluated["image"].dtype == evaluated["normal"].dtype == torch.float32
    assert torch.equal(evaluated["normal"], sample["normal"].float())


@pytest.mark.parametrize("config, words", [
    ({"train_transforms": {"scale": [1.0]}}, ['"data.train_transforms"', "Unexpected keys: {'scale'}"]),
    ({"eval_transforms": {"scales": [1.0]}}, ['"data.eval_transforms"', "Unexpected keys: {'scales'}"]),
    ({"train_transforms": {"scales": [0.8, 1.0]}}, ['"data.train_transforms"', "ZoomFactor: 0.8"]),
    ({"train_transforms": {"flip_p": 1.5}}, ['"data.train_transforms"', "1.5", "v<=1"]),
    ({"train_transforms": {"flip_p": -0.1}}, ['"data.train_transforms"', "-0.1", "v>=0"]),
    ({"train_transforms": {"brightness": -1}}, ['"data.train_transforms"', "-1", "v>=0"]),
    ({"train_transforms": {"hue": 0.7}}, ['"data.train_transforms"', "HueShift: 0.7"]),
    ({"eval_transforms": {"size": [0, 10]}}, ['"data.eval_transforms"', "[0, 10]"]),
    ({"eval_transforms": {"size": "big"}}, ['"data.eval_transforms"', "big"]),
])
def test_config_values_are_typed_and_named(config, words):
    """The settings' types (TrainTransforms, EvalTransforms) are what the config is read with: a
    bad key or value fails while parsing, naming the settings and the value."""
    from crossvit_mtl.engine.datamodule import DenseDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DenseDataModule, "data")
    assert parser.parse_object({"data": {"train_transforms": {"scales": [1.0, 2.0], "hue": 0.5}}})
    with pytest.raises(ArgumentError) as err:
        parser.parse_object({"data": config})
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_settings_from_python_are_checked_by_the_transforms():
    """Called from Python with a mapping: an unknown key is refused by the settings' signature,
    an impossible value by the transform that would use it."""
    with pytest.raises(TypeError, match="TrainTransforms has no key 'scale' \\(its keys: scales, flip_p"):
        build_transforms(INFO, train=True, config={"scale": (1.0,)})
    for config, message in (({"scales": ()}, "scales must be a non-empty list"), ({"flip_p": 1.5}, "p must be a probability"),
                            ({"hue": 0.7}, "hue must be a number in \\[0, 0.5\\], got 0.7")):
        with pytest.raises(ValueError, match=message):
            build_transforms(INFO, train=True, config=config)
    with pytest.raises(ValueError, match="size must be a positive int"):
        build_transforms(INFO, train=False, config={"size": (0, 10)})


def test_constructor_and_info_validation():
    with pytest.raises(ValueError, match="p must be"):
        RandomHorizontalFlip(p=2)
    with pytest.raises(ValueError, match="scales"):
        RandomScaleCrop(scales=(0.5,))
    with pytest.raises(ValueError, match="depth_kind"):
        RandomScaleCrop(meta={"depth_kind": "inverse"})
    with pytest.raises(ValueError, match="depth_kind"):
        build_transforms(DatasetInfo(name="bad", tasks=("depth",), depth_kind="log"), train=True)
