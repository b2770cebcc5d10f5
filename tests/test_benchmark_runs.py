"""The shipped benchmark configs end to end on tiny trees in the archives' formats: two training
steps with the papers' augmentation, `test` on padded batches of mixed image sizes with every
metric, the edge and saliency PNGs at each image's size, `crossvit-mtl edges` on those PNGs giving
the odsF `test` printed, the project's loss scaling as an override, and the configs' network taking
the whole encoder of the release it names."""
from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from crossvit_mtl import create_model
from crossvit_mtl.cli import main
from crossvit_mtl.cli.demo import config_path
from crossvit_mtl.data.nyud import NYUDv2
from crossvit_mtl.data.pascal_context import PascalContext
from crossvit_mtl.data.registry import build_dataset
from crossvit_mtl.engine.prediction_maps import to_image
from crossvit_mtl.models.pretrained import RELEASES, hub_repo, load_state
from fixtures_data import write_mtan_nyuv2, write_nyud, write_pascal_context
from fixtures_hub import cache_repo, offline_hub, safetensors_bytes
from test_pretrained import published_shapes, random_state

#: the configs' encoder (crossvit_18_240's settings) at test widths: 12- and 16-px patches, CLS fusion
TINY = {"dims": [24, 48], "heads": [1, 2], "mlp_ratios": [2.0, 2.0, 1.0], "patch_sizes": [12, 16],
        "stages": [[1, 1, 0], [1, 1, 0]], "fusion": "cls", "decoder_channels": 16, "detail_channels": 8}
CROP = [48, 48]  # the smallest size both patches tile
PASCAL_SIZES = {"2008_000015": (40, 30), "2008_000002": (30, 40), "2008_000003": (36, 26), "2008_000007": (20, 44)}
NYUD_SIZES = {"0002": (34, 44)}


def shipped(name: str) -> dict:
    return yaml.safe_load(config_path(name).read_text())


def run(name: str, root, run_dir, *extra: str, pretrained: str = "null") -> int:
    """`fit --config configs/NAME --test_after_fit true` at test size: the shipped settings, with the
    crop and padding made 48x48 and the network shrunk."""
    config = shipped(name)
    train = {**config["data"]["train_transforms"], "crop_size": CROP}
    evaluation = {**config["data"]["eval_transforms"], "pad_to": CROP}
    return main(["fit", "--config", str(config_path(name)), "--data.root", str(root), "--run_dir", str(run_dir),
                 "--model.pretrained", pretrained, "--model.model_options", json.dumps({**TINY, "img_size": CROP}),
                 "--data.train_transforms", json.dumps(train), "--data.eval_transforms", json.dumps(evaluation),
                 "--data.batch_size", "2", "--data.eval_batch_size", "3", "--data.num_workers", "0",
                 # what is checked is what `test` gives (on the last weights, the configs' rule): no validation
                 "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.precision", "32-true",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                 "--trainer.log_every_n_steps", "1", "--report_samples", "0", "--test_after_fit", "true", *extra])


def edges_cli(pred, truth, max_dist: float, out) -> dict:
    assert main(["edges", str(pred), "--boundaries", str(truth), "--max_dist", str(max_dist), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def write_boundaries(dataset, folder) -> None:
    """The data set's own edge targets as boundary PNGs (what `test` scores against)."""
    folder.mkdir()
    for index in range(len(dataset)):
        edge = dataset.load(index)["edge"]
        Image.fromarray((edge == 1).astype(np.uint8) * 255).save(folder / f"{dataset.sample_id(index)}.png")


def check_predictions(run_dir, dataset, tasks) -> None:
    for task in tasks:
        folder = run_dir / "predictions" / "val" / task
        assert sorted(p.stem for p in folder.glob("*.png")) == sorted(dataset.ids), task
        for index, sample_id in enumerate(dataset.ids):
            with Image.open(folder / f"{sample_id}.png") as image:
                assert image.mode == "L" and image.size[::-1] == dataset.image_size(index), (task, sample_id)
        assert not list(folder.glob(".*"))  # no partial file left


def test_pascal_context_config_trains_tests_padded_and_writes_maps_edges_scores(tmp_path, monkeypatch, caplog):
    root = write_pascal_context(tmp_path / "PASCALContext", size=(30, 40), sizes=PASCAL_SIZES)
    # the config's release by name, from a Hugging Face cache holding it at the test's widths
    state = random_state(published_shapes((24, 48), (1, 2), (1, 1, 0), (2, 2), stages=2))
    name = shipped("pascal_context.yaml")["model"]["pretrained"]
    cache_repo(offline_hub(tmp_path, monkeypatch), hub_repo(name)[0], {"model.safetensors": safetensors_bytes(state)})
    lightning_log = logging.getLogger("lightning.pytorch")  # the command line's messages; not propagated
    lightning_log.addHandler(caplog.handler)
    try:
        assert run("pascal_context.yaml", root, tmp_path / "run", pretrained=name) == 0
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert f"model.pretrained {name}: loaded" in caplog.text and "shape mismatch" not in caplog.text
    run_dir = tmp_path / "run"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["loss_scaling"] == "none" and saved["model"]["weighting"] == "fixed"
    assert {t: s["weight"] for t, s in saved["model"]["losses"].items()} == {
        "segmentation": 1.0, "human_parts": 2.0, "saliency": 5.0, "normal": 10.0, "edge": 50.0}
    results = json.loads((run_dir / "metrics_test.json").read_text())["results"]
    for task, keys in {"segmentation": ["miou"], "human_parts": ["miou"], "saliency": ["maxf", "miou"],
                       "normal": ["mean", "median"], "edge": ["odsf", "oisf", "ap"]}.items():
        for key in keys:
            assert isinstance(results[task][key], float) and math.isfinite(results[task][key]), (task, key)
    val = PascalContext(root, "val")
    check_predictions(run_dir, val, ("edge", "saliency"))
    # the PNGs score as `test` scored its padded batches, against the same (loader's) boundaries
    write_boundaries(val, tmp_path / "boundaries")
    scores = edges_cli(run_dir / "predictions" / "val" / "edge", tmp_path / "boundaries", 0.0075, tmp_path / "e.json")
    assert scores["images"] == 3 and scores["ods_f"] > 0
    assert (scores["ods_f"], scores["ois_f"], scores["ap"]) == pytest.approx(
        (results["edge"]["odsf"], results["edge"]["oisf"], results["edge"]["ap"]), abs=1e-12)


def test_nyud_v2_config_edges_of_test_equal_crossvit_mtl_edges_on_its_pngs(tmp_path):
    root = write_nyud(tmp_path / "NYUDv2", size=(30, 40), sizes=NYUD_SIZES)
    assert run("nyud_v2.yaml", root, tmp_path / "run") == 0
    run_dir = tmp_path / "run"
    results = json.loads((run_dir / "metrics_test.json").read_text())["results"]
    assert sorted(results) == ["depth", "edge", "normal", "segmentation"]
    assert all(math.isfinite(results["depth"][k]) for k in ("rmse", "abs_err", "rel_err", "delta1"))
    val = NYUDv2(root, "val")
    check_predictions(run_dir, val, ("edge",))
    assert not (run_dir / "predictions" / "val" / "saliency").exists()
    # the archive's own edge PNGs are the ground truth of both
    scores = edges_cli(run_dir / "predictions" / "val" / "edge", root / "edge", 0.011, tmp_path / "e.json")
    assert scores["images"] == 2 and scores["ods_f"] > 0
    assert scores["ods_f"] == pytest.approx(results["edge"]["odsf"], abs=1e-12)
    assert scores["ois_f"] == pytest.approx(results["edge"]["oisf"], abs=1e-12)
    assert scores["ap"] == pytest.approx(results["edge"]["ap"], abs=1e-12)


def test_the_projects_loss_scaling_runs_as_an_override(tmp_path, caplog):
    root = write_nyud(tmp_path / "NYUDv2", size=(30, 40))
    caplog.set_level(logging.INFO)
    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(caplog.handler)
    try:
        # what is checked happens before the first step
        assert run("nyud_v2.yaml", root, tmp_path / "run", "--model.loss_scaling", "initial", "--model.weighting", "ew",
                   "--model.losses", "{}", "--test_after_fit", "false", "--save_predictions", "[]",
                   "--trainer.max_steps", "1") == 0
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert "loss scaling: each task's loss is divided by its initial value" in caplog.text
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["loss_scaling"] == "initial" and saved["model"]["losses"] == {}
    assert not (tmp_path / "run" / "predictions").exists()


@pytest.mark.parametrize("name, write", [("pascal_context.yaml", write_pascal_context), ("nyud_v2.yaml", write_nyud)])
def test_the_configs_settings_parse_and_a_resumed_fit_finds_them_unchanged(name, write, tmp_path, capsys):
    """The shipped transform settings pass their types (the whole fit parser reads the config), and
    what a resumed fit compares, the settings as given against the plain ones its checkpoint
    holds, is equal for them and names a changed crop."""
    from jsonargparse import ArgumentParser

    from crossvit_mtl.cli.train import against_checkpoint
    from crossvit_mtl.engine.datamodule import DenseDataModule

    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config_path(name)), "--print_config"])
    assert exc.value.code == 0
    printed, data = yaml.safe_load(capsys.readouterr().out)["data"], shipped(name)["data"]
    for key in ("train_transforms", "eval_transforms"):
        assert printed[key] == data[key], key
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DenseDataModule, "data")
    data = {**data, "root": str(write(tmp_path / "tree", size=(30, 40))), "num_workers": 0}
    given = parser.parse_object({"data": data})
    module = DenseDataModule(**given.data.as_dict())
    torch.save({"datamodule_hyper_parameters": dict(module.hparams)}, tmp_path / "last.ckpt")
    stored = torch.load(tmp_path / "last.ckpt", weights_only=True)["datamodule_hyper_parameters"]
    for key in ("train_transforms", "eval_transforms"):  # plain data, the file's values
        assert json.loads(json.dumps(stored[key])) == shipped(name)["data"][key], key
    assert against_checkpoint({"data": stored}, given, fit=True)[:2] == ([], [])
    cropped = {**shipped(name)["data"]["train_transforms"], "crop_size": [96, 96]}
    differing = against_checkpoint({"data": stored}, parser.parse_object({"data": {**data, "train_transforms": cropped}}),
                                   fit=True)[0]
    assert len(differing) == 1 and differing[0].startswith("--data.train_transforms {") and "[96, 96]" in differing[0]


@pytest.mark.parametrize("tasks, words", [("[depth]", ["'depth'", "8-bit"]), ("[saliency]", ["no task 'saliency'"]),
                                          ("[colour]", ["'colour'"])])
def test_save_predictions_refuses_what_it_cannot_write_in_one_line(tmp_path, capsys, tasks, words):
    root = write_nyud(tmp_path / "NYUDv2", size=(30, 40))
    assert run("nyud_v2.yaml", root, tmp_path / "run", "--save_predictions", tasks) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("crossvit-mtl fit: error: save_predictions")
    assert all(word in err for word in words), err


@pytest.mark.parametrize("name, tasks", [("pascal_context.yaml", {"segmentation": 21, "human_parts": 7, "saliency": 2,
                                                                  "normal": 3, "edge": 1}),
                                         ("nyud_v2.yaml", {"segmentation": 40, "depth": 1, "normal": 3, "edge": 1})])
def test_the_configs_network_takes_the_whole_encoder_of_its_release(name, tasks):
    """At full size: the release's real tensor names and shapes (random values) fill every encoder
    tensor of the configured network, positions interpolated to the crop's grid."""
    config = shipped(name)["model"]
    release = hub_repo(config["pretrained"])[0].split("/")[1]
    assert RELEASES[release] == "crossvit_18_240"
    state = random_state(published_shapes((224, 448), (7, 7), (1, 6, 0), (3, 3)))
    model = create_model(config["model"], tasks=tasks, **config["model_options"])
    report = load_state(model, state, "partial")
    own = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert report.loaded == sorted(k for k in own if k.startswith("encoder.")) and not report.mismatched
    h, w = config["model_options"]["img_size"]
    assert report.interpolated == [f"encoder.pos_embed.0 20x20->{h // 12}x{w // 12}",
                                   f"encoder.pos_embed.1 14x14->{h // 16}x{w // 16}"]
    assert (h % 48, w % 48) == (0, 0) and (h, w) == tuple(shipped(name)["data"]["train_transforms"]["crop_size"])


def test_data_sets_name_their_samples_and_read_image_sizes(tmp_path):
    pascal = PascalContext(write_pascal_context(tmp_path / "pc", size=(30, 40), sizes=PASCAL_SIZES), "val")
    assert [pascal.sample_id(i) for i in range(3)] == ["2008_000002", "2008_000003", "2008_000007"]
    assert [pascal.image_size(i) for i in range(3)] == [(30, 40), (36, 26), (20, 44)]
    nyud = NYUDv2(write_nyud(tmp_path / "nyud", size=(30, 40), sizes=NYUD_SIZES, layout="mti-net"), "val")
    assert [nyud.sample_id(i) for i in range(2)] == ["0001", "0002"] and nyud.image_size(1) == (34, 44)
    mtan = build_dataset("nyuv2_mtan", write_mtan_nyuv2(tmp_path / "mtan", size=(12, 16)), split="val")
    assert mtan.sample_id(1) == "1" and mtan.image_size(1) == (12, 16)


def test_a_prediction_is_cropped_back_and_resized_where_evaluation_resized():
    prob = torch.zeros(10, 12)
    prob[:4, :6] = torch.linspace(0, 1, 24).view(4, 6)
    exact = to_image(prob, (4, 6), (4, 6))
    assert exact.dtype == np.uint8 and exact.shape == (4, 6)
    assert exact.tolist() == torch.round(prob[:4, :6] * 255).to(torch.uint8).tolist()
    enlarged = to_image(prob, (4, 6), (8, 12))
    assert enlarged.shape == (8, 12) and enlarged[0, 0] == 0 and enlarged[-1, -1] == 255
    labels = torch.arange(120).view(10, 12) % 7
    assert to_image(labels, (4, 6), (8, 12)).tolist() == labels[:4, :6].repeat_interleave(2, 0).repeat_interleave(
        2, 1).tolist()
