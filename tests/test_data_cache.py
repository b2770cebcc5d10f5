"""The cache format: round trip, atomic and non-destructive writes, up-front errors, build_dataset."""
import argparse
import json
import pickle

import numpy as np
import pytest

from crossvit_mtl.cli import UserError
from crossvit_mtl.cli import data as data_cli
from crossvit_mtl.data.cache import FORMAT_VERSION, CachedDataset, CacheWriter
from crossvit_mtl.data.errors import DataError
from crossvit_mtl.data.registry import build_dataset
from crossvit_mtl.data.synth import dataset as synth_dataset
from crossvit_mtl.data.synth import synth_info, synth_split_seed, write_synth
from fixtures_data import CACHE_INFO, random_sample, write_cache, write_image_folder, write_mtan_nyuv2


def test_round_trip(tmp_path):
    written = write_cache(tmp_path / "c", {"train": 3, "val": 2})
    for split, samples in written.items():
        ds = CachedDataset(tmp_path / "c", split)
        assert len(ds) == len(samples)
        assert ds.info.tasks == CACHE_INFO.tasks and ds.info.class_names == CACHE_INFO.class_names
        assert ds.info.palette == CACHE_INFO.palette and ds.info.scene_classes == ("a", "b", "c")
        for i, expected in enumerate(samples):
            raw = ds.load(i)
            np.testing.assert_array_equal(raw["image"], expected["image"])
            np.testing.assert_array_equal(raw["segmentation"], expected["segmentation"])
            np.testing.assert_array_equal(raw["depth"], expected["depth"])
            np.testing.assert_allclose(raw["normal"], expected["normal"], atol=1e-3)
            assert raw["classification"] == expected["classification"]
    sample = CachedDataset(tmp_path / "c", "val")[1]
    assert sample["image"].shape == (3, 8, 16) and sample["segmentation"][0, 0] == 255
    assert sample["depth"].shape == (1, 8, 16) and sample["normal"].shape == (3, 8, 16)


def test_arrays_and_meta_on_disk(tmp_path):
    write_cache(tmp_path / "c", {"train": 3})
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["splits"] == {"train": 3} and meta["image_size"] == [8, 16] and meta["version"] == FORMAT_VERSION == 3
    expected = {"images.npy": ((3, 8, 16, 3), np.uint8), "labels.npy": ((3, 8, 16), np.uint8),
                "depth.npy": ((3, 8, 16), np.float32), "normals.npy": ((3, 8, 16, 3), np.float16),
                "classes.npy": ((3,), np.int64)}
    for name, (shape, dtype) in expected.items():
        array = np.load(tmp_path / "c" / "train" / name, mmap_mode="r")
        assert array.shape == shape and array.dtype == dtype


def test_only_present_tasks_written_and_task_subset(tmp_path):
    info = CACHE_INFO.__class__(name="seg", tasks=("segmentation",), class_names=("a", "b", "c", "d", "e", "f", "g", "h"))
    write_cache(tmp_path / "c", {"train": 2}, info=info)
    assert sorted(p.name for p in (tmp_path / "c" / "train").iterdir()) == ["images.npy", "labels.npy"]
    write_cache(tmp_path / "d", {"train": 2})
    ds = CachedDataset(tmp_path / "d", "train", tasks=["depth"])
    assert ds.info.tasks == ("depth",) and set(ds[0]) == {"image", "depth"}


def test_measured_stats(tmp_path):
    rng = np.random.default_rng(0)
    samples = [random_sample(rng, (4, 4)) for _ in range(3)]
    with CacheWriter(tmp_path / "c", CACHE_INFO, (4, 4), measure_stats=True) as writer:
        writer.write_split("train", 3, samples)
    images = np.stack([s["image"] for s in samples]) / 255.0
    info = CachedDataset(tmp_path / "c").info
    np.testing.assert_allclose(info.mean, images.mean((0, 1, 2)), atol=1e-5)
    np.testing.assert_allclose(info.std, images.std((0, 1, 2)), atol=1e-5)


def test_refuses_to_overwrite(tmp_path):
    write_cache(tmp_path / "c", {"train": 1})
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        CacheWriter(tmp_path / "c", CACHE_INFO, (8, 16))
    with CacheWriter(tmp_path / "c", CACHE_INFO, (8, 16), overwrite=True) as writer:
        writer.write_split("train", 2, [random_sample(np.random.default_rng(1), (8, 16)) for _ in range(2)])
    assert len(CachedDataset(tmp_path / "c")) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a cache"):
        CacheWriter(tmp_path / "mine", CACHE_INFO, (8, 16), overwrite=True)


def test_interrupted_write_leaves_nothing(tmp_path):
    def samples():
        yield random_sample(np.random.default_rng(0), (8, 16))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), CacheWriter(tmp_path / "c", CACHE_INFO, (8, 16)) as writer:
        writer.write_split("train", 2, samples())
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_samples(tmp_path):
    bad = random_sample(np.random.default_rng(0), (8, 16))
    bad["segmentation"][1, 1] = 9
    with pytest.raises(ValueError, match="sample 0: segmentation has label values outside 0..7 and 255"), \
            CacheWriter(tmp_path / "c", CACHE_INFO, (8, 16)) as writer:
        writer.write_split("train", 1, [bad])
    with pytest.raises(ValueError, match=r"depth has shape \(4, 4\)"), CacheWriter(tmp_path / "c", CACHE_INFO, (8, 16)) as writer:
        good = random_sample(np.random.default_rng(0), (8, 16))
        writer.write_split("train", 1, [{**good, "depth": np.zeros((4, 4))}])


def test_pickles_for_dataloader_workers(tmp_path):
    write_cache(tmp_path / "c", {"train": 2})
    ds = CachedDataset(tmp_path / "c")
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays is None
    np.testing.assert_array_equal(clone.load(1)["image"], ds.load(1)["image"])


def _break(root, name, array):
    np.save(root / "train" / name, array)


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "meta.json").unlink(), "meta.json: missing: not a crossvit-mtl cache"),
    (lambda r: (r / "meta.json").write_text("{not json"), "meta.json: not valid JSON"),
    (lambda r: (r / "meta.json").write_text('{"name": "x"}'), "meta.json: missing keys: format, version, tasks"),
    (lambda r: (r / "train" / "depth.npy").unlink(), "depth.npy: file not found"),
    (lambda r: _break(r, "labels.npy", np.zeros((3, 8, 8), np.uint8)), "labels.npy: shape (3, 8, 8), expected (3, 8, 16)"),
    (lambda r: _break(r, "depth.npy", np.zeros((3, 8, 16), np.float64)), "depth.npy: dtype float64, expected float32"),
    (lambda r: (r / "train" / "normals.npy").write_bytes((r / "train" / "normals.npy").read_bytes()[:300]),
     "normals.npy: not a readable .npy file"),
    (lambda r: (r / "train" / "classes.npy").write_bytes(b"garbage"), "classes.npy: not a .npy file"),
])
def test_bad_cache_errors_name_the_file(tmp_path, damage, message):
    write_cache(tmp_path / "c", {"train": 3})
    damage(tmp_path / "c")
    with pytest.raises(DataError) as err:
        CachedDataset(tmp_path / "c", "train")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_split_task_and_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: cache folder not found"):
        CachedDataset(tmp_path / "nowhere")
    info = CACHE_INFO.__class__(name="seg", tasks=("segmentation",), class_names=tuple("abcdefgh"))
    write_cache(tmp_path / "c", {"train": 1}, info=info)
    with pytest.raises(DataError, match=r"meta.json: no split 'val' \(has: train\)"):
        CachedDataset(tmp_path / "c", "val")
    with pytest.raises(DataError, match=r"meta.json: task\(s\) normal not in this cache \(has: segmentation\)"):
        CachedDataset(tmp_path / "c", "train", tasks=["normal"])


def _fake_render(seed, index, height=128, width=256):
    rng = np.random.default_rng([seed, index])
    return random_sample(rng, (height, width), scene_classes=3)


def test_write_synth_with_stand_in_renderer(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_dataset, "render_sample", _fake_render)
    monkeypatch.setattr(synth_dataset, "synth_info", lambda: CACHE_INFO)
    write_synth(tmp_path / "s", train=3, val=2, test=4, height=8, width=16, seed=5)
    train, val, test = (CachedDataset(tmp_path / "s", split) for split in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (3, 2, 4)
    np.testing.assert_array_equal(train.load(2)["image"], _fake_render(5, 2, 8, 16)["image"])
    np.testing.assert_array_equal(test.load(1)["image"], _fake_render(synth_split_seed(5, "test"), 1, 8, 16)["image"])
    # three streams: no split repeats another's scenes
    assert len({synth_split_seed(5, s) for s in ("train", "val", "test")}) == 3
    assert not np.array_equal(val.load(0)["image"], train.load(0)["image"])
    assert not np.array_equal(test.load(0)["image"], val.load(0)["image"])
    with pytest.raises(ValueError, match="splits train, val, test, not 'extra'"):
        synth_split_seed(5, "extra")
    with pytest.raises(FileExistsError):
        write_synth(tmp_path / "s", train=1, val=1, height=8, width=16)


def test_write_synth_workers_match_on_demand(tmp_path):
    write_synth(tmp_path / "s", train=3, val=2, height=32, width=64, seed=1, workers=2)
    cached = build_dataset("synth", tmp_path / "s", split="val")
    live = build_dataset("synth", split="val", length=2, seed=1, height=32, width=64)
    assert cached.info.tasks == synth_info().tasks and cached.info.mean == synth_info().mean
    for key, value in live[1].items():
        if key == "normal":  # float16 in the cache
            assert (value - cached[1][key]).abs().max() < 2e-3
        else:
            assert (value == cached[1][key]).all(), key


def test_demo_renders_again_the_scenes_of_an_older_renderer(tmp_path, capsys):
    """A cache written before the scenes changed (traffic lights by class) holds other scenes for the
    same (seed, index): the demo renders it again instead of training on it."""
    import json

    from crossvit_mtl.cli.demo import ensure_synth
    from crossvit_mtl.data.synth.dataset import RENDERER

    root = tmp_path / "s"
    ensure_synth(root, 1, 1, 1, 1, (16, 32))
    assert json.loads((root / "meta.json").read_text())["extra"] == {"renderer": RENDERER}
    ensure_synth(root, 1, 1, 1, 1, (16, 32))
    assert "using the synthetic scenes in" in capsys.readouterr().out
    meta = json.loads((root / "meta.json").read_text())
    meta["extra"] = {}  # what caches of the first renderer hold
    (root / "meta.json").write_text(json.dumps(meta))
    ensure_synth(root, 1, 1, 1, 1, (16, 32))
    assert f"holds scenes of renderer version 1; rendering them again in version {RENDERER}" in capsys.readouterr().out
    assert json.loads((root / "meta.json").read_text())["extra"] == {"renderer": RENDERER}


def test_build_dataset(tmp_path):
    write_cache(tmp_path / "c", {"train": 2})
    assert len(build_dataset("cache", tmp_path / "c", tasks=["depth"])) == 2
    write_mtan_nyuv2(tmp_path / "nyu")
    assert build_dataset("nyuv2_mtan", tmp_path / "nyu", split="val").info.num_classes == 13
    write_image_folder(tmp_path / "f")
    assert build_dataset("folder", tmp_path / "f", size=(8, 8))[0]["image"].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        build_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match=r"data set 'cache' has no option\(s\) 'labels' \(accepted: tasks\)"):
        build_dataset("cache", tmp_path / "c", labels="mtan7")
    with pytest.raises(ValueError, match="data set 'folder' needs a root folder"):
        build_dataset("folder")


def test_cli_synth(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["data", "synth", "--out", str(tmp_path / "s"), "--train", "2", "--val", "1",
                              "--test", "1", "--size", "16x32"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    # the class of a scene is a rotation of its index: 2 train scenes are classes 0 and 1
    assert "wrote" in out and "note: train holds 2 scenes, not a multiple of 4: its classes are not balanced " \
        "(1/1/0/0)" in out and "note: val holds 1 scenes" in out
    assert CachedDataset(tmp_path / "s", "val")[0]["image"].shape == (3, 16, 32)
    assert len(CachedDataset(tmp_path / "s", "test")) == 1
    with pytest.raises(UserError, match="already exists"):
        args.func(args)
