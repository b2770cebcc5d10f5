"""The multi-task benchmarks' augmentation and padded evaluation (data/transforms.py): rescale with
depth divided by the factor, crops with mmsegmentation's cat_max_ratio rule, photometric distortion
against scikit-image's HSV, padding with values no metric scores, mixed sizes in one batch, and
every task's metric on a padded batch equal to the metric on the unpadded images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2hsv

from crossvit_mtl.data.base import to_tensors
from crossvit_mtl.data.common import IGNORE_INDEX, DatasetInfo
from crossvit_mtl.data.nyud import NYUDv2
from crossvit_mtl.data.pascal_context import PascalContext
from crossvit_mtl.data.transforms import (
    PadTo,
    PhotoMetricDistortion,
    RandomCrop,
    RandomRescale,
    build_transforms,
    collate_padded,
    content_size,
    hsv_to_rgb,
    rgb_to_hsv,
)
from crossvit_mtl.tasks import get_task
from crossvit_mtl.tasks.base import nearest

ALL = ("segmentation", "human_parts", "saliency", "depth", "normal", "edge")
INFO = DatasetInfo(name="bench", tasks=ALL, class_names=tuple("abcde"))


def raw_sample(rng: np.random.Generator, h: int, w: int) -> dict:
    """A raw sample as a loader returns it, each target with its not-annotated / invalid pixels."""
    labels = rng.integers(0, 5, (h, w)).astype(np.uint8)
    labels[0, :3] = IGNORE_INDEX
    parts = rng.integers(0, 7, (h, w)).astype(np.uint8)
    saliency = (rng.random((h, w)) < 0.4).astype(np.uint8)
    depth = (rng.random((h, w)) * 8 + 0.5).astype(np.float32)
    depth[-1] = 0
    normal = rng.normal(size=(h, w, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[:, 0] = 0
    edge = (rng.random((h, w)) < 0.15).astype(np.uint8)
    return {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "segmentation": labels, "human_parts": parts,
            "saliency": saliency, "depth": depth, "normal": normal, "edge": edge}


def sample(seed: int = 0, h: int = 20, w: int = 28) -> dict[str, torch.Tensor]:
    return to_tensors(raw_sample(np.random.default_rng(seed), h, w))


# ----------------------------------------------------------------------------------- rescale

@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_rescale_resizes_everything_and_divides_depth_by_the_factor(factor):
    s = sample()
    out = RandomRescale((factor, factor), meta=INFO.as_meta())(s)
    size = (int(20 * factor), int(28 * factor))
    assert all(v.shape[-2:] == size for k, v in out.items())
    # labels, normals: nearest neighbours of the input, values copied; depth: the same, divided by s
    for key in ("segmentation", "human_parts", "saliency", "normal"):
        assert torch.equal(out[key], nearest(s[key], size)), key
    torch.testing.assert_close(out["depth"], nearest(s["depth"], size) / factor, rtol=0, atol=0)
    assert ((out["depth"] == 0) == (nearest(s["depth"], size) == 0)).all()  # invalid stays invalid
    assert set(out["edge"].unique().tolist()) <= {0, 1}


def test_rescale_draws_the_factor_uniformly_from_the_range_and_disparity_grows():
    rescale = RandomRescale((0.5, 2.0))
    sizes = []
    for seed in range(40):
        torch.manual_seed(seed)
        sizes.append(rescale({"image": torch.rand(3, 40, 40)})["image"].shape[-1])
    assert min(sizes) >= 20 and max(sizes) <= 80 and len(set(sizes)) > 15
    disparity = RandomRescale((2.0, 2.0), meta={"depth_kind": "disparity"})({"depth": torch.full((1, 4, 4), 3.0)})
    assert torch.equal(disparity["depth"], torch.full((1, 8, 8), 6.0))


# -------------------------------------------------------------------------------------- crop

def coordinates(h: int, w: int) -> dict[str, torch.Tensor]:
    """An image and maps whose values say where each pixel was: row in one, column in another."""
    rows = torch.arange(h)[:, None].expand(h, w)
    cols = torch.arange(w)[None, :].expand(h, w)
    return {"image": torch.stack([rows, cols, rows + cols]).float(), "segmentation": (rows % 5).to(torch.uint8),
            "depth": (cols.float() + 1)[None]}


def test_crop_takes_one_window_for_image_and_maps_and_keeps_short_sides_whole():
    crop = RandomCrop((8, 100))
    for seed in range(10):
        torch.manual_seed(seed)
        out = crop(coordinates(30, 20))
        assert out["image"].shape == (3, 8, 20)  # width 20 < 100: kept whole
        top = int(out["image"][0, 0, 0])
        assert torch.equal(out["image"], coordinates(30, 20)["image"][:, top:top + 8])
        assert torch.equal(out["segmentation"], coordinates(30, 20)["segmentation"][top:top + 8])
        assert torch.equal(out["depth"], coordinates(30, 20)["depth"][:, top:top + 8])
    small = coordinates(5, 6)
    assert RandomCrop((8, 8))(small) is small


def test_a_crop_without_a_persons_part_is_not_annotated_for_parts():
    """ATRC's and InvPT's AddIgnoreRegions after their crop: a parts map with no part pixel left
    is 255 everywhere; one with a part keeps its background. A whole-view class is cut away too."""
    parts = torch.zeros(20, 20, dtype=torch.uint8)
    parts[:4, :4] = 3
    s = {"image": coordinates(20, 20)["image"], "human_parts": parts, "classification": torch.tensor(1)}
    crop = RandomCrop((8, 8), meta={"crop_keeps_class": False})
    kept = cut = 0
    for seed in range(20):
        torch.manual_seed(seed)
        out = crop(s)
        top, left = int(out["image"][0, 0, 0]), int(out["image"][1, 0, 0])
        window = parts[top:top + 8, left:left + 8]
        if (window == 3).any():
            assert torch.equal(out["human_parts"], window)
            kept += 1
        else:
            assert (out["human_parts"] == IGNORE_INDEX).all()
            cut += 1
        assert int(out["classification"]) == IGNORE_INDEX
    assert kept and cut
    assert int(RandomCrop((8, 8))(s)["classification"]) == 1  # a class of objects survives a crop


def test_cat_max_ratio_redraws_as_mmsegmentation_does():
    """The window kept is the first of up to eleven draws whose annotated pixels hold two classes
    or more and no class at 75 % or more of them (numpy's unique counts decide here), else the
    eleventh. Mostly one class with a few small patches: most windows fail, some pass."""
    h, w, size = 40, 40, (10, 10)
    labels = torch.zeros(h, w, dtype=torch.uint8)
    labels[2:16, 22:38] = 3
    labels[25:38, 2:16] = 2
    labels[20:22, :] = IGNORE_INDEX
    crop = RandomCrop(size, cat_max_ratio=0.75, labels="segmentation")
    passed = first_passed = 0
    for seed in range(60):
        torch.manual_seed(seed)
        draws = [(int(torch.randint(h - 10 + 1, ())), int(torch.randint(w - 10 + 1, ()))) for _ in range(11)]

        def ok(top, left):
            window = labels[top:top + 10, left:left + 10].numpy()
            _, counts = np.unique(window[window != IGNORE_INDEX], return_counts=True)
            return len(counts) > 1 and counts.max() / counts.sum() < 0.75

        expected = next((d for d in draws[:10] if ok(*d)), draws[10])
        torch.manual_seed(seed)
        out = crop({"image": coordinates(h, w)["image"], "segmentation": labels})
        assert (int(out["image"][0, 0, 0]), int(out["image"][1, 0, 0])) == expected
        passed += ok(*expected)
        first_passed += ok(*draws[0])
    assert first_passed < 30 < passed  # most first draws fail; the redraws mostly find a window that passes
    no_rule = RandomCrop(size)
    torch.manual_seed(0)
    first = [(int(torch.randint(31, ())), int(torch.randint(31, ())))][0]
    torch.manual_seed(0)
    out = no_rule({"image": coordinates(h, w)["image"], "segmentation": labels})
    assert (int(out["image"][0, 0, 0]), int(out["image"][1, 0, 0])) == first


# -------------------------------------------------------------------------------- photometric

def test_hsv_round_trip_matches_scikit_image():
    rgb = torch.rand(3, 17, 23, dtype=torch.float64)
    rgb[:, 0, 0] = 0.4  # grey
    rgb[:, 0, 1] = 0.0  # black
    hsv = rgb_to_hsv(rgb)
    np.testing.assert_allclose(hsv.permute(1, 2, 0).numpy(), rgb2hsv(rgb.permute(1, 2, 0).numpy()), atol=1e-12)
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb, atol=1e-12, rtol=0)


def _distort(seed: int, **options) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 0.8 + 0.1
    torch.manual_seed(seed)
    return image, PhotoMetricDistortion(**options)({"image": image, "depth": torch.ones(1, 16, 16)})["image"]


def test_photometric_brightness_adds_one_offset_within_its_delta():
    steps = set()
    for seed in range(30):
        image, out = _distort(seed, contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0), hue_delta=0)
        offset = (out - image)[(out > 0) & (out < 1)]
        assert float(offset.max() - offset.min()) < 1e-6 and abs(float(offset.mean())) <= 32 / 255 + 1e-6
        steps.add(bool(offset.abs().max() > 1e-6))
    assert steps == {True, False}  # applied with probability 1/2


def test_photometric_saturation_scales_hsv_saturation_only():
    for seed in range(30):
        image, out = _distort(seed, brightness_delta=0, contrast_range=(1.0, 1.0), hue_delta=0)
        before, after = (rgb2hsv(x.permute(1, 2, 0).double().numpy()) for x in (image, out))
        np.testing.assert_allclose(after[..., 2], before[..., 2], atol=1e-6)  # value kept
        np.testing.assert_allclose(after[..., 0], before[..., 0], atol=1e-5)  # hue kept
        ratio = after[..., 1] / before[..., 1]
        unclipped = after[..., 1] < 1 - 1e-6
        assert np.ptp(ratio[unclipped]) < 1e-4 and 0.5 - 1e-6 <= ratio[unclipped].mean() <= 1.5 + 1e-6


def test_photometric_hue_turns_by_whole_opencv_steps():
    shifts = set()
    for seed in range(30):
        image, out = _distort(seed, brightness_delta=0, contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0))
        before, after = (rgb2hsv(x.permute(1, 2, 0).double().numpy()) for x in (image, out))
        np.testing.assert_allclose(after[..., 1:], before[..., 1:], atol=1e-5)
        turn = ((after[..., 0] - before[..., 0] + 0.5) % 1.0 - 0.5) * 180  # in OpenCV's units
        assert np.ptp(turn) < 1e-3 and abs(turn.mean() - round(turn.mean())) < 1e-3 and -18 <= round(turn.mean()) < 18
        shifts.add(round(turn.mean()))
    assert len(shifts) > 5


def test_photometric_stays_in_range_and_leaves_other_keys():
    for seed in range(10):
        image, out = _distort(seed)
        assert out.min() >= 0 and out.max() <= 1 and out.shape == image.shape
    torch.manual_seed(0)
    s = {"image": torch.rand(3, 4, 4), "depth": torch.ones(1, 4, 4)}
    assert PhotoMetricDistortion()(s)["depth"] is s["depth"]


# ---------------------------------------------------------------------------------------- pad

def test_pad_fills_each_map_with_a_value_its_metric_ignores():
    s = sample(h=20, w=28)
    out = PadTo((24, 32))(s)
    assert all(v.shape[-2:] == (24, 32) for v in out.values())
    for key, value in s.items():
        assert torch.equal(out[key][..., :20, :28], value), key
    assert (out["image"][:, 20:] == 0).all() and (out["image"][:, :, 28:] == 0).all()
    for key, fill in (("segmentation", IGNORE_INDEX), ("human_parts", IGNORE_INDEX), ("saliency", IGNORE_INDEX),
                      ("edge", IGNORE_INDEX), ("depth", 0), ("normal", 0)):
        assert (out[key][..., 20:, :] == fill).all() and (out[key][..., 28:] == fill).all(), key
    # larger than the size: kept; a divisor rounds up
    assert PadTo((10, 10))(s)["image"].shape[-2:] == (20, 28)
    assert PadTo((10, 10), size_divisor=12)(s)["image"].shape[-2:] == (24, 36)
    assert PadTo(None, size_divisor=48).target(425, 560) == (432, 576)


def test_a_batch_of_mixed_sizes_is_padded_to_its_largest():
    a, b = sample(0, 20, 28), sample(1, 26, 18)
    batch = collate_padded([a, b])
    assert batch["image"].shape == (2, 3, 26, 28) and batch["normal"].shape == (2, 3, 26, 28)
    assert torch.equal(batch["segmentation"][0, :20, :28], a["segmentation"])
    assert torch.equal(batch["depth"][1, :, :26, :18], b["depth"])
    assert (batch["edge"][1, :, 18:] == IGNORE_INDEX).all()
    same = collate_padded([a, sample(2, 20, 28)])
    assert same["image"].shape == (2, 3, 20, 28)


def test_content_size_is_the_image_unless_evaluation_resizes():
    assert content_size((375, 500), {"pad_to": [528, 528]}) == (375, 500)
    assert content_size((375, 500), {"size": [256, 320], "pad_to": [288, 320]}) == (256, 320)
    assert content_size((375, 500), None) == (375, 500)


# ------------------------------------------------------------------- metrics on padded batches

@pytest.mark.parametrize("dataset", [PascalContext, NYUDv2])
def test_every_metric_on_a_padded_mixed_batch_equals_the_metric_on_the_images(dataset):
    """What evaluation computes on a padded batch of two sizes is what it would compute on the
    two images' own pixels: for every task of both benchmarks, with their edge maxDist."""
    meta = {**dataset.INFO.as_meta(), "task_channels": dataset.INFO.task_channels()}
    raws = [raw_sample(np.random.default_rng(seed), h, w) for seed, (h, w) in enumerate(((30, 40), (36, 26)))]
    samples = [{k: v for k, v in to_tensors(r).items() if k == "image" or k in dataset.TASKS} for r in raws]
    for s in samples:
        s["segmentation"] = s["segmentation"] % meta["task_channels"]["segmentation"]
    pad = PadTo((48, 48))
    batch = collate_padded([pad(s) for s in samples])
    g = torch.Generator().manual_seed(0)
    for task in dataset.TASKS:
        spec = get_task(task)
        channels = meta["task_channels"][task]
        outputs = torch.randn(2, channels, 48, 48, generator=g) * 3
        if task == "depth":
            outputs = outputs.abs() + 0.1
        padded, own = spec.build_metric(meta, "test"), spec.build_metric(meta, "test")
        padded.update(outputs, spec.widen(batch[task]))
        for j, s in enumerate(samples):
            h, w = s["image"].shape[-2:]
            own.update(outputs[j:j + 1, :, :h, :w], spec.widen(s[task][None]))
        got, expected = padded.compute(), own.compute()
        for key, value in expected.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12, nan_ok=True), (task, key)
        assert any(isinstance(v, float) and v == v for v in expected.values()), task  # something was scored


def test_benchmark_pipelines_and_their_checks():
    train = build_transforms(INFO, train=True, config={
        "scale_range": [0.5, 2.0], "crop_size": [24, 24], "cat_max_ratio": 0.75, "cat_max_ratio_task": "segmentation",
        "photometric": True})
    assert [type(t).__name__ for t in train.transforms] == [
        "RandomRescale", "RandomCrop", "RandomHorizontalFlip", "PhotoMetricDistortion", "Normalize", "PadTo",
        "CastFloats"]
    for seed in range(6):
        torch.manual_seed(seed)
        out = train(sample(seed, 20, 28))
        assert all(v.shape[-2:] == (24, 24) for v in out.values())
        assert out["image"].dtype == torch.float16
    evaluation = build_transforms(INFO, train=False, config={"pad_to": [24, 32], "size_divisor": 16})
    assert [type(t).__name__ for t in evaluation.transforms] == ["Normalize", "PadTo", "CastFloats"]
    assert evaluation(sample(0, 20, 28))["image"].shape == (3, 32, 32)
    # called from Python: what contradicts, what no type can say, and impossible values as the
    # transforms refuse them (a config meets the settings' types first: see below)
    for config, words in (
            ({"scale_range": [0.5, 2.0], "scales": [1.0, 1.5]}, ["'scales'", "'scale_range'"]),
            ({"photometric": True, "brightness": 0.3}, ["'photometric'", "'brightness'"]),
            ({"cat_max_ratio": 0.75, "crop_size": [8, 8]}, ["'cat_max_ratio'", "cat_max_ratio_task"]),
            ({"cat_max_ratio": 0.75, "cat_max_ratio_task": "segmentation"}, ["'cat_max_ratio'", "crop_size"]),
            ({"cat_max_ratio_task": "classification"}, ["'cat_max_ratio_task'", "dense task", "'classification'"]),
            ({"cat_max_ratio_task": "segmentaton"}, ["'cat_max_ratio_task'", "dense task", "'segmentaton'"]),
            ({"photometric": "yes"}, ["'photometric'", "true or false"]),
            ({"scale_range": [2.0, 0.5]}, ["scale_range must be", "low <= high", "[2.0, 0.5]"]),
            ({"scale_range": [1.0, float("inf")]}, ["scale_range must be", "[1.0, inf]"]),
            ({"crop_size": [0, 8]}, ["crop size must be a positive int", "[0, 8]"]),
            ({"cat_max_ratio": 0.0, "crop_size": [8, 8], "cat_max_ratio_task": "segmentation"},
             ["cat_max_ratio must be a share in (0, 1]", "0.0"])):
        with pytest.raises(ValueError) as err:
            build_transforms(INFO, train=True, config=config)
        assert all(word in str(err.value) for word in words), (config, str(err.value))
    with pytest.raises(ValueError, match="size_divisor must be an integer >= 1, got 0"):
        build_transforms(INFO, train=False, config={"size_divisor": 0})
    with pytest.raises(TypeError, match="EvalTransforms has no key 'crop_size'"):
        build_transforms(INFO, train=False, config={"crop_size": [8, 8]})
    # scale_range alone turns the MTAN zoom's default off, photometric alone the jitter's
    alone = build_transforms(INFO, train=True, config={"scale_range": [0.5, 2.0], "photometric": True})
    assert [type(t).__name__ for t in alone.transforms] == [
        "RandomRescale", "RandomHorizontalFlip", "PhotoMetricDistortion", "Normalize", "CastFloats"]


@pytest.mark.parametrize("config, words", [
    ({"train_transforms": {"crop_size": [0, 8]}}, ['"data.train_transforms"', "PositiveInt", "[0, 8]"]),
    ({"train_transforms": {"scale_range": [0.0, 2.0]}}, ['"data.train_transforms"', "PositiveFiniteFloat: 0.0"]),
    ({"train_transforms": {"scale_range": [0.5]}}, ['"data.train_transforms"', "a tuple with 2 elements"]),
    ({"train_transforms": {"cat_max_ratio": 0.0}}, ['"data.train_transforms"', "ClassShare: 0.0"]),
    ({"train_transforms": {"cat_max_ratio": 1.5}}, ['"data.train_transforms"', "ClassShare: 1.5"]),
    ({"train_transforms": {"cat_max_ratio_task": 3}}, ['"data.train_transforms"', "Given value: 3"]),
    ({"train_transforms": {"photometric": "often"}}, ['"data.train_transforms"', "often"]),
    ({"train_transforms": {"pad_to": [8, 8]}}, ['"data.train_transforms"', "Unexpected keys: {'pad_to'}"]),
    ({"eval_transforms": {"pad_to": [528, -1]}}, ['"data.eval_transforms"', "[528, -1]"]),
    ({"eval_transforms": {"size_divisor": 0}}, ['"data.eval_transforms"', "PositiveInt: 0"]),
    ({"eval_transforms": {"size_divisor": 2.5}}, ['"data.eval_transforms"', "2.5"]),
    ({"eval_transforms": {"crop_size": [8, 8]}}, ['"data.eval_transforms"', "Unexpected keys: {'crop_size'}"]),
])
def test_benchmark_settings_are_typed_for_the_config_parser(config, words):
    """The benchmarks' keys are part of TrainTransforms and EvalTransforms: the config parser refuses
    a bad one while reading, naming the settings and the value; the shipped configs' values pass."""
    from jsonargparse import ArgumentError, ArgumentParser

    from crossvit_mtl.engine.datamodule import DenseDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DenseDataModule, "data")
    good = parser.parse_object({"data": {
        "train_transforms": {"scale_range": [0.5, 2.0], "crop_size": [528, 528], "cat_max_ratio": 0.75,
                             "cat_max_ratio_task": "segmentation", "flip_p": 0.5, "photometric": True},
        "eval_transforms": {"pad_to": 528, "size_divisor": 48}}})
    assert good.data.train_transforms["scale_range"] == (0.5, 2.0) and good.data.eval_transforms["pad_to"] == 528
    with pytest.raises(ArgumentError) as err:
        parser.parse_object({"data": config})
    for word in words:
        assert word in str(err.value), (word, str(err.value))
