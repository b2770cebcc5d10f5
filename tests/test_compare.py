import json
from pathlib import Path

import pytest
import yaml

from crossvit_mtl import create_model
from crossvit_mtl.cli import UserError, main
from crossvit_mtl.cli.demo import config_path
from crossvit_mtl.cli.sweep import plan
from fixtures_run import tiny_config


def write_run(folder, results, split="test"):
    folder.mkdir(parents=True)
    name = "metrics_test.json" if split == "test" else "metrics.json"
    (folder / name).write_text(json.dumps({"stage": split, "model": "crossvit_mtl_tiny", "results": results}))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    seg = write_run(tmp_path / "seg", {"segmentation": {
        "miou": 0.5, "pixel_acc": 0.8, "thesis_iou": 0.66, "iou_per_class": {"road": 0.9}}})
    depth = write_run(tmp_path / "depth", {"depth": {"abs_err": 0.2, "rel_err": 0.4, "rmse": 1.0}})
    mtl = write_run(tmp_path / "mtl", {"segmentation": {"miou": 0.55, "pixel_acc": 0.8, "thesis_iou": None},
                                       "depth": {"abs_err": 0.25, "rel_err": 0.3, "rmse": 0.5}})
    return seg, depth, mtl


def test_compare_prints_every_scalar_and_delta_m_both_ways(runs, tmp_path, capsys):
    seg, depth, mtl = runs
    out = tmp_path / "table.json"
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(out), "--all-metrics"]) == 0
    table, per_task = capsys.readouterr().out.strip().split("\n\nEach task against its single-task baseline:\n\n")
    table, which = table.split("\n\nΔm over ")
    assert which.startswith("each task's Delta-m metrics")
    table = table.splitlines()
    # miou +10 %, pixel acc 0 %, abs err -25 %, rel err +25 % (lower is better): per metric +2.5 %;
    # per task: segmentation +5, depth 0 -> +2.5 too
    assert table[-1].startswith("| mtl | 1 |") and table[-1].endswith("| +2.50 | +2.50 |")
    assert "segmentation mIoU ↑" in table[0] and "depth RMSE ↓" in table[0]
    assert "Δm metrics (%) ↑" in table[0] and "Δm tasks (%) ↑" in table[0]
    assert "iou_per_class" not in table[0] and len(table) == 2 + 3
    assert per_task.splitlines()[0] == "| run | seeds | Δ segmentation (%) ↑ | Δ depth (%) ↑ |"
    assert per_task.splitlines()[2:] == ["| mtl | 1 | +5.00 | +0.00 |"]  # runs only, not the baselines
    data = json.loads(out.read_text())
    assert data["split"] == "test" and data["groups"][-1]["delta_m"]["metrics"]["mean"] == pytest.approx(2.5)
    assert [g["baseline"] for g in data["groups"]] == [True, True, False]
    md = tmp_path / "table.md"
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(md)]) == 0
    assert "every metric" in md.read_text().lower()
    assert main(["compare", mtl, "--baselines", seg, depth, "--out", str(md)]) == 2  # no silent overwrite
    assert "table.md: exists; pass --overwrite" in capsys.readouterr().err


def test_compare_reads_the_test_split_by_default(tmp_path, capsys):
    seg = write_run(tmp_path / "seg", {"segmentation": {"miou": 0.5}}, split="val")
    assert main(["compare", seg, "--baselines", seg]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "metrics_test.json" in err and "crossvit-mtl test" in err
    assert main(["compare", seg, "--baselines", seg, "--split", "val"]) == 2  # same name twice
    assert "two runs are named 'seg'" in capsys.readouterr().err


def write_seeds(root, name, values):
    for seed, results in enumerate(values):
        write_run(root / name / f"seed{seed}", results)
    return str(root / name)


def test_seed_folders_give_mean_std_paired_delta_m_and_noise_marks(tmp_path, capsys):
    from crossvit_mtl.comparison import compare, interval, to_json

    seg = write_seeds(tmp_path, "single_seg", [{"segmentation": {"miou": m}} for m in (0.50, 0.40, 0.60)])
    dep = write_seeds(tmp_path, "single_depth", [{"depth": {"abs_err": a}} for a in (1.0, 2.0, 1.0)])
    # ew: seg +10 %, +10 %, +10 % against the same seed's baseline; depth 0, 0, 0
    ew = write_seeds(tmp_path, "ew", [{"segmentation": {"miou": m}, "depth": {"abs_err": a}}
                                      for m, a in ((0.55, 1.0), (0.44, 2.0), (0.66, 1.0))])
    # other: seg +20, +20, +21 %; depth -10, -11, -10 % (lower is better: abs err up)
    other = write_seeds(tmp_path, "other", [{"segmentation": {"miou": m}, "depth": {"abs_err": a}}
                                            for m, a in ((0.60, 1.1), (0.48, 2.22), (0.726, 1.1))])
    comparison = compare([ew, other], [seg, dep])
    assert comparison.reference == "ew"
    ew_g, other_g = comparison.runs
    assert ew_g.delta["metrics"] == pytest.approx({"seed0": 5.0, "seed1": 5.0, "seed2": 5.0})
    assert other_g.delta["tasks"] == pytest.approx({"seed0": 5.0, "seed1": 4.5, "seed2": 5.5})
    # paired differences to ew: 0, -0.5, +0.5 -> mean 0, inside any interval
    mean, low, high = interval(comparison.paired(other_g, None, "metrics"))
    assert mean == pytest.approx(0.0) and low < 0 < high
    # t interval by hand: std 0.5, n 3, t(0.975, 2) = 4.3027 -> half width 4.3027 * 0.5 / sqrt(3)
    assert high == pytest.approx(4.302653 * 0.5 / 3 ** 0.5, rel=1e-5)
    data = to_json(comparison)
    ew_json = next(g for g in data["groups"] if g["name"] == "ew")
    assert ew_json["delta_m"]["metrics"]["std"] == pytest.approx(0.0)
    assert ew_json["mean"]["segmentation"]["miou"] == pytest.approx(0.55)
    other_json = next(g for g in data["groups"] if g["name"] == "other")
    assert other_json["delta_m"]["metrics"]["minus_reference"]["beyond_noise"] is False
    # each task's own Delta-m: segmentation +20, +20, +21 %; depth -10, -11, -10 %
    assert other_json["task_delta_m"]["segmentation"]["per_seed"] == pytest.approx(
        {"seed0": 20.0, "seed1": 20.0, "seed2": 21.0})
    assert other_json["task_delta_m"]["depth"]["mean"] == pytest.approx(-31 / 3)
    assert other_json["task_delta_m"]["depth"]["beyond_noise"] is True
    assert ew_json["task_delta_m"]["depth"]["mean"] == pytest.approx(0.0)
    assert main(["compare", ew, other, "--baselines", seg, dep]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| run | seeds |") and "Δm metrics − ew" in table[0]
    row = next(line for line in table if line.startswith("| other |"))
    assert "| 3 |" in row and "0.6020 ± 0.1230" in row and "+0.00 [" in row and "*" not in row.split("|")[-2]
    assert table[-1] == "| other | 3 | +20.33 ± 0.58 * | -10.33 ± 0.58 * |"


def test_consistent_gain_is_marked_beyond_noise(tmp_path):
    from crossvit_mtl.comparison import compare, to_markdown

    seg = write_seeds(tmp_path, "single_seg", [{"segmentation": {"miou": 0.5}}] * 3)
    ew = write_seeds(tmp_path, "ew", [{"segmentation": {"miou": m}} for m in (0.50, 0.51, 0.49)])
    better = write_seeds(tmp_path, "better", [{"segmentation": {"miou": m}} for m in (0.60, 0.62, 0.59)])
    comparison = compare([ew, better], [seg])
    row = to_markdown(comparison).splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "better" and cells[-2].endswith("*") and cells[-4].endswith("*")
    assert not to_markdown(comparison).splitlines()[-2].split("|")[-4].strip().endswith("*")  # ew vs single: noise


def write_sweep(path, sweep_dir):
    spec = {
        "sweep_dir": str(sweep_dir),
        "base": tiny_config(model={"scheduler": "none"}, data={"tasks": ["segmentation", "depth"]},
                            trainer={"max_steps": 1, "logger": False}),
        "runs": {"seg": {"baseline": True, "data": {"tasks": ["segmentation"]}},
                 "depth": {"baseline": True, "data": {"tasks": ["depth"]}},
                 "uw": {"model": {"weighting": "uw"}},
                 "upgrad": {"model": {"weighting": "upgrad"}}},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_sweep_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    assert main(["sweep", config, "--dry-run", "--seeds", "0", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 * 2
    assert lines[0] == (f"seg seed 0 (baseline): crossvit-mtl fit --config {tmp_path}/sweep/configs/seg.yaml "
                        f"--run_dir {tmp_path}/sweep/seg/seed0 --seed_everything 0 --test_after_fit true")
    assert lines[-1].startswith("upgrad seed 1: ") and f"--run_dir {tmp_path}/sweep/upgrad/seed1" in lines[-1]
    assert not (tmp_path / "sweep").exists()
    _, planned = plan(config)
    assert [r["seed"] for r in planned[:3]] == [0, 1, 2]  # three seeds unless told otherwise
    assert planned[6]["config"]["model"]["weighting"] == "uw"
    assert planned[6]["config"]["model"]["model_options"]["dims"] == [32, 64]  # merged, not replaced
    with pytest.raises(UserError, match="--runs: no run 'nope'"):
        plan(config, only=["nope"])
    spec = yaml.safe_load(Path(config).read_text())
    spec["runs"]["upgrad"]["seeds"] = [0]  # a run of its own seeds (screened out on one)
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(spec))
    _, planned = plan(tmp_path / "own.yaml")
    assert [r["seed"] for r in planned if r["name"] == "upgrad"] == [0]
    assert [r["seed"] for r in planned if r["name"] == "uw"] == [0, 1, 2]
    assert [r["seed"] for r in plan(tmp_path / "own.yaml", seeds=[4])[1] if r["name"] == "upgrad"] == [4]
    with pytest.raises(UserError, match="seeds must be a list of distinct integers"):
        plan(config, seeds=[1, 1])


def test_sweep_fits_every_run_and_seed_tests_then_compares(tmp_path, capsys):
    config = write_sweep(tmp_path / "sweep.yaml", tmp_path / "sweep")
    assert main(["sweep", config, "--seeds", "0", "1", "--runs", "seg", "uw"]) == 0
    out = capsys.readouterr().out
    assert "not finished" in out and not (tmp_path / "sweep" / "compare.json").exists()
    assert main(["sweep", config, "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "seg seed 0 (baseline): finished, skipped" in out  # a second call continues, it does not redo
    for name in ("seg", "depth", "uw", "upgrad"):
        for seed in (0, 1):
            assert (tmp_path / "sweep" / name / f"seed{seed}" / "metrics_test.json").is_file()
    data = json.loads((tmp_path / "sweep" / "compare.json").read_text())
    assert [g["baseline"] for g in data["groups"]] == [True, True, False, False]
    assert all(len(g["delta_m"]["tasks"]["per_seed"]) == 2 for g in data["groups"][2:])
    assert "Δm metrics (%)" in out and (tmp_path / "sweep" / "compare.md").is_file()


def test_shipped_sweep_config_plans_baselines_and_methods():
    _, planned = plan(config_path("sweep_synth.yaml"))
    baselines = [r for r in planned if r["baseline"]]
    tasks = {r["name"]: tuple(r["config"]["data"]["tasks"]) for r in baselines}
    assert sorted(t for names in tasks.values() for t in names) == sorted(
        ["segmentation", "depth", "normal", "classification"])
    methods = {r["config"]["model"].get("weighting") for r in planned if not r["baseline"]}
    assert {"ew", "upgrad", "nashmtl", "cagrad", "pcgrad", "uw", "dwa", "rlw", "gls"} <= methods
    assert {r["seed"] for r in planned} == {0, 1, 2}
    variants = {r["name"]: r["config"]["model"].get("model_options", {}) for r in planned}
    assert variants["ew_cls_fusion"] == {"fusion": "cls"}
    assert variants["ew_cross_task_attention"] == {"task_interaction": "cross_attention"}


@pytest.mark.parametrize("name", ["demo.yaml", "synth_mtl.yaml", "synth_five_tasks.yaml", "cityscapes_mtan_seg_depth.yaml",
                                  "nyuv2_mtan.yaml"])
def test_shipped_mtl_configs_parse(name, capsys):
    """Every multi-task config parses, and its model options are ones its network takes."""
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(config_path(name)), "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["weighting"] in ("ew", "fixed", "dwa", "upgrad")
    assert len(printed["data"]["tasks"]) >= 2
    create_model(printed["model"]["model"], **(printed["model"]["model_options"] or {}))
    if printed["data"]["dataset"] == "synth":  # its losses and options build on the scenes' description
        from crossvit_mtl.data.synth import synth_info
        from crossvit_mtl.engine.module import DenseTaskModule

        info = synth_info()
        meta = {**info.as_meta(), "tasks": printed["data"]["tasks"], "image_size": [96, 192],
                "task_channels": {t: c for t, c in info.task_channels().items() if t in printed["data"]["tasks"]}}
        module = DenseTaskModule(**{k: v for k, v in printed["model"].items() if k != "dataset_meta"}, dataset_meta=meta)
        assert module.tasks == printed["data"]["tasks"]
