import json

import pytest
import yaml

from crossvit_mtl.cli import main
from crossvit_mtl.cli.demo import config_path
from crossvit_mtl.cli.sweep import plan


def write_run(folder, results):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"stage": "val", "model": "crossvit_mtl_tiny", "results": results}))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    seg = write_run(tmp_path / "seg", {"segmentation": {
        "miou": 0.5, "pixel_acc": 0.8, "thesis_iou": 0.66, "iou_per_class": {"road": 0.9}}})
    depth = write_run(tmp_path / "depth", {"depth": {"abs_err": 0.2, "rel_err": 0.4, "rmse": 1.0}})
    mtl = write_run(tmp_path / "mtl", {"segmentation": {"miou": 0.55, "pixel_acc": 0.8, "thesis_iou": None},
                                       "depth": {"abs_err": 0.25, "rel_err": 0.3, "rmse": 0.5}})
    return seg, depth, mtl


def test_compare_prints_every_scalar_and_delta_m(runs, tmp_path, capsys):
    seg, depth, mtl = runs
    out = tmp_path / "table.json"
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(out)]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    # miou +10 %, pixel acc 0 %, abs err -25 %, rel err +25 % (lower is better): mean +2.5 %
    assert table[-1].startswith(f"| {mtl} |") and table[-1].endswith("| +2.50 |")
    assert "segmentation mIoU ↑" in table[0] and "depth RMSE ↓" in table[0] and "Δm (%)" in table[0]
    assert "iou_per_class" not in table[0] and len(table) == 2 + 3
    rows = json.loads(out.read_text())["rows"]
    assert rows[-1]["delta_m"] == pytest.approx(2.5)
    assert [r["baseline"] for r in rows] == [True, True, False]
    md = tmp_path / "table.md"
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(md)]) == 0
    assert md.read_text().splitlines()[-1] == table[-1]


def test_missing_metrics_or_baseline_is_one_line_naming_the_run(runs, tmp_path, capsys):
    seg, depth, mtl = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compare", str(empty), "--baselines", seg, depth]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(empty) in err and "metrics.json" in err
    assert main(["compare", mtl, "--baselines", seg]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and mtl in err and "depth" in err


def write_sweep(path, sweep_dir):
    spec = {
        "sweep_dir": str(sweep_dir),
        "base": {
            "model": {"model": "crossvit_mtl_tiny", "scheduler": "none",
                      "model_options": {"dims": [32, 64], "heads": [2, 2], "stages": [[1, 1, 1]],
                                        "decoder_stages": 1, "decoder_channels": 16, "detail_channels": 8}},
            "data": {"dataset": "synth", "options": {"length": 4, "height": 32, "width": 64},
                     "tasks": ["segmentation", "depth"], "batch_size": 2, "num_workers": 0},
            "trainer": {"max_steps": 1, "limit_val_batches": 1, "enable_progress_bar": False,
                        "enable_model_summary": False, "precision": "32-true", "logger": False},
            "report_samples": 0,
        },
        "runs": {"seg": {"baseline": True, "data": {"tasks": ["segmentation"]}},
                 "depth": {"baseline": True, "data": {"tasks": ["depth"]}},
                 "uw": {"model": {"weighting": "uw"}},
                 "upgrad": {"model": {"weighting": "upgrad"}}},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_sweep_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    assert main(["sweep", config, "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == (f"crossvit-mtl fit --config {tmp_path}/sweep/configs/seg.yaml "
                        f"--run_dir {tmp_path}/sweep/seg   # baseline")
    assert lines[3].endswith(f"--run_dir {tmp_path}/sweep/upgrad")
    assert not (tmp_path / "sweep").exists()
    _, planned = plan(config)
    assert planned[2]["config"]["model"]["weighting"] == "uw"
    assert planned[2]["config"]["model"]["model_options"]["dims"] == [32, 64]  # merged, not replaced


def test_sweep_fits_every_run_then_compares(tmp_path, capsys):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    assert main(["sweep", config]) == 0
    out = capsys.readouterr().out
    for name in ("seg", "depth", "uw", "upgrad"):
        assert (tmp_path / "sweep" / name / "metrics.json").is_file()
    rows = json.loads((tmp_path / "sweep" / "compare.json").read_text())["rows"]
    assert [r["baseline"] for r in rows] == [True, True, False, False]
    assert all(isinstance(r["delta_m"], float) for r in rows[2:])
    assert "Δm (%)" in out and (tmp_path / "sweep" / "compare.md").read_text().strip() in out


def test_shipped_sweep_config_plans_baselines_and_methods():
    _, planned = plan(config_path("sweep_synth.yaml"))
    baselines = [r for r in planned if r["baseline"]]
    assert sorted(t for r in baselines for t in r["config"]["data"]["tasks"]) == sorted(
        ["segmentation", "depth", "normal", "classification"])
    methods = {r["config"]["model"].get("weighting") for r in planned if not r["baseline"]}
    assert {"ew", "uw", "dwa", "rlw", "gls", "upgrad"} <= methods


@pytest.mark.parametrize("name", ["synth_mtl.yaml", "cityscapes_mtan_seg_depth.yaml", "nyuv2_mtan.yaml"])
def test_shipped_mtl_configs_parse(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config_path(name)), "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["weighting"] in ("ew", "dwa", "upgrad")
    assert len(printed["data"]["tasks"]) >= 2
