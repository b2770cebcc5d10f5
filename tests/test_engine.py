import json
import math
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import fixtures_run
from crossvit_mtl import create_model
from crossvit_mtl.cli import main
from crossvit_mtl.engine.calibration import measure_initial_losses
from crossvit_mtl.engine.datamodule import DenseDataModule
from crossvit_mtl.engine.module import DenseTaskModule
from crossvit_mtl.engine.optim import build_optimizer, param_groups, warmup_cosine
from crossvit_mtl.models import model_from_checkpoint
from crossvit_mtl.serialization import CheckpointError
from fixtures_run import TINY_OPTIONS, TINY_TASKS, tiny_config

TINY_DATA = {"dataset": "synth", "options": {"length": 8, "height": 64, "width": 128},
             "tasks": ["segmentation"], "batch_size": 4, "num_workers": 0}


def write_config(path, **changes):
    """The tiny run's config with these changes to its groups."""
    return fixtures_run.write_config(path, tiny_config(**changes))


def test_fit_writes_checkpoints_metrics_and_plots(fitted_run):
    run_dir = fitted_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["model"] == "crossvit_mtl_tiny"
    seg = metrics["results"]["segmentation"]
    assert 0.0 <= seg["pixel_acc"] <= 1.0
    # the pooled figure is acc / (2 - acc), as docs/training.md explains
    assert seg["thesis_iou"] == pytest.approx(seg["pixel_acc"] / (2 - seg["pixel_acc"]), rel=1e-9)
    assert set(seg["iou_per_class"]) == {"void", "flat", "construction", "object", "nature", "sky",
                                         "human", "vehicle"}
    for name in ("curves.png", "confusion_val.png", "samples_val.png"):
        with Image.open(run_dir / "plots" / name) as img:
            assert img.size[0] > 100 and img.size[1] > 100
    assert (run_dir / "csv" / "fit" / "metrics.csv").is_file()
    assert (run_dir / "report.html").is_file()
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.heavy
def test_resume_from_last_and_test(fitted_run, tmp_path, capfd, monkeypatch):
    config, fitted = str(fitted_run.parent / "config.yaml"), fitted_run
    # a CPU with bf16 matrix products, so that the config's 32-true differs from the automatic choice
    # whatever CPU runs the test
    monkeypatch.setattr("crossvit_mtl.engine.precision.cpu_has_bf16_matmul", lambda: True)
    run_dir = tmp_path / "run"  # a copy: the other tests see the fitted run as it was, in any order
    shutil.copytree(fitted, run_dir)
    (run_dir / "metrics_test.json").unlink()  # the shared run's own test: written again below
    assert main(["fit", "--config", config, "--run_dir", str(run_dir), "--trainer.max_steps", "4",
                 "--ckpt_path", "last", "--system_malloc", "true"]) == 0
    said = "".join(capfd.readouterr())
    # what the run does to host memory and which precision it runs in, and why, in its output
    assert "host memory: glibc's allocator as it is (--system_malloc)" in said
    assert "precision: 32-true: asked for by --trainer.precision" in said
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 4
    best = run_dir / "checkpoints" / "best.ckpt"
    assert main(["test", "--config", config, "--run_dir", str(run_dir), "--ckpt_path", str(best)]) == 0
    out = "".join(capfd.readouterr())
    assert "host memory" not in out  # only commands that train or predict set it
    assert "test results" in out and "mIoU" in out and "thesis pooled IoU" in out
    assert json.loads((run_dir / "metrics_test.json").read_text())["stage"] == "test"


def test_checkpoint_loads_without_pickled_code_and_predicts(fitted_run, tmp_path):
    run_dir = fitted_run
    model, meta = model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert meta["task_channels"] == {"segmentation": 8, "depth": 1, "normal": 3, "classification": 4}
    assert list(meta["task_channels"]) == meta["tasks"] == TINY_TASKS and meta["image_size"] == [32, 64]
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(64, 128), (90, 170)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoints" / "last.ckpt"),
                 "--input", str(images), "--out", str(out)]) == 0
    with Image.open(out / "img1_labels.png") as labels:
        assert labels.size == (170, 90)
        assert np.asarray(labels).max() < 8
    for suffix in ("seg", "overlay"):
        with Image.open(out / f"img1_{suffix}.png") as img:
            assert img.size == (170, 90) and img.mode == "RGB"
    assert len(json.loads((out / "predictions.json").read_text())) == 2


def test_predict_refuses_a_checkpoint_with_a_pickled_payload(tmp_path, capsys):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Payload()}}, bad)
    with pytest.raises(CheckpointError, match="refused to load"):
        model_from_checkpoint(bad)
    assert main(["predict", "--checkpoint", str(bad), "--input", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not marker.exists()


def test_unknown_config_key_fails_with_its_name(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", model={"learning_rate": 0.1})
    assert main(["fit", "--config", config, "--run_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "learning_rate" in err
    assert not (tmp_path / "r").exists()


def test_task_not_in_data_fails_in_one_line(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", data={"tasks": ["segmentation", "edges"]})
    assert main(["fit", "--config", config, "--run_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'edges' is not a task" in err


def test_single_task_model_refuses_other_tasks():
    dm = DenseDataModule(**{**TINY_DATA, "tasks": ["segmentation", "depth"]})
    with pytest.raises(ValueError, match="predicts only 'segmentation'"):
        DenseTaskModule(model="crossvit_seg_tiny", dataset_meta=dm.meta)
    with pytest.raises(ValueError, match="losses: task\\(s\\) 'normal' not provided"):
        DenseTaskModule(model="crossvit_mtl_tiny", dataset_meta=dm.meta, losses={"normal": {}})


def test_loaders_pin_memory_only_when_training_on_cuda():
    """Page-locked batches let Lightning copy them to a GPU without blocking; on the CPU they
    would only cost a copy."""
    from types import SimpleNamespace

    dm = DenseDataModule(**TINY_DATA)
    assert not dm.train_dataloader().pin_memory  # no trainer yet
    for device, pinned in (("cpu", False), ("cuda", True)):
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        assert dm.train_dataloader().pin_memory == dm.val_dataloader().pin_memory == pinned, device


def test_no_weight_decay_on_norms_biases_positions_and_cls():
    model = create_model("crossvit_seg_tiny")
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert "encoder.pos_embed.0" in no_decay_names and "encoder.cls_token.1" in no_decay_names
    assert all(not n.endswith(".bias") and "norm" not in n for n in decay_names)
    assert "encoder.stages.0.blocks.1.0.attn.qkv.weight" in decay_names
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decay_names) + len(no_decay_names) == len(list(model.parameters()))
    adam = build_optimizer(model, "adam", 1e-3, 0.0)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 1e-3
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):  # torch's own check
        build_optimizer(model, "adamw", -0.1, 0.0)


def test_warmup_cosine_schedule_values():
    f = warmup_cosine(total_steps=110, warmup_steps=10, min_ratio=0.0)
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    g = warmup_cosine(100, 0, 0.1)
    assert g(50) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_fit_refuses_an_existing_run_folder(fitted_run, capsys):
    config, run_dir = str(fitted_run.parent / "config.yaml"), fitted_run
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    assert main(["fit", "--config", config, "--run_dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"--run_dir {run_dir}: already holds a run" in err and "--ckpt_path last" in err
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    from crossvit_mtl.engine.checkpoint import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    good = target.read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, target)
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(target, weights_only=True)["step"] == 1


def test_compile_option_compiles_the_network_forward(monkeypatch):
    """``model.compile: true`` hands the network's call to torch.compile (spied on here: compiling
    for real takes minutes on a CPU) and leaves the state dict's names alone."""
    compiled = []

    def spy(fn, *args, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", spy)
    meta = {"name": "t", "tasks": ["segmentation"], "task_channels": {"segmentation": 3}, "image_size": [32, 64]}
    options = {"dims": [32, 64], "heads": [2, 2], "stages": [[1, 1, 1]], "decoder_channels": 16,
               "detail_channels": 8, "decoder_stages": 1}
    plain = DenseTaskModule("crossvit_seg_tiny", options, dataset_meta=meta)
    module = DenseTaskModule("crossvit_seg_tiny", options, compile=True, dataset_meta=meta)
    module.load_state_dict(plain.state_dict())
    plain.configure_model()
    assert not compiled
    module.configure_model()
    assert len(compiled) == 1
    assert module.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(1, 3, 32, 64)
    assert torch.equal(module.eval()(x)["segmentation"], plain.eval()(x)["segmentation"])


def test_the_cli_without_a_subcommand_as_the_demo_builds_it(tmp_path):
    from crossvit_mtl.cli import UserError
    from crossvit_mtl.cli.train import CrossViTCLI, cli_kwargs

    config = write_config(tmp_path / "config.yaml")
    cli = CrossViTCLI(**cli_kwargs(), args=["--config", config, "--run_dir", str(tmp_path / "run")], run=False)
    assert cli.trainer.default_root_dir == str(tmp_path / "run") and cli.model.hparams.model == "crossvit_mtl_tiny"
    (tmp_path / "taken").write_text("keep me")
    with pytest.raises(UserError, match=r"^--run_dir \S+/taken: is a file, expected a folder$"):
        CrossViTCLI(**cli_kwargs(), args=["--config", config, "--run_dir", str(tmp_path / "taken")], run=False)
    assert (tmp_path / "taken").read_text() == "keep me"


MTL_DATA = {"dataset": "synth", "options": {"length": 10, "height": 32, "width": 64},
            "tasks": ["segmentation", "depth", "classification"], "batch_size": 4, "num_workers": 0}


def test_initial_losses_are_measured_without_side_effects_and_divide_each_loss():
    torch.manual_seed(0)
    dm = DenseDataModule(**MTL_DATA)
    module = DenseTaskModule("crossvit_mtl_tiny", TINY_OPTIONS, dataset_meta=dm.meta)
    batch = dm.calibration_batch(size=6)
    assert batch["image"].shape == (6, 3, 32, 64) and batch["segmentation"].dtype == torch.uint8
    assert torch.equal(dm.calibration_batch(size=6)["image"], batch["image"])  # the same samples every time
    weights = {k: v.clone() for k, v in module.state_dict().items()}
    rng = torch.get_rng_state()
    module.eval()
    measured = measure_initial_losses(module, batch, chunk=4)
    assert torch.equal(torch.get_rng_state(), rng) and not module.training
    assert all(torch.equal(v, weights[k]) for k, v in module.state_dict().items())  # BN statistics too
    # by hand: training mode, chunks of 4 and 2 weighted by their size, with the same random draws
    expected = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        module.train()
        for start in (0, 4):
            chunk = module.widen({k: v[start:start + 4] for k, v in batch.items()})
            out = module(chunk["image"])
            for t in module.tasks:
                expected[t] = expected.get(t, 0.0) + float(module.criteria[t](out[t], chunk[t])) * len(chunk["image"])
    module.load_state_dict(weights)
    assert measured == pytest.approx({t: v / 6 for t, v in expected.items()}, rel=1e-5)
    # depth in metres starts an order of magnitude above a cross-entropy: what the rule removes
    assert measured["depth"] > 3 * measured["classification"]
    module.loss_scale.set_initial(measured)
    out = module(batch["image"][:2].float())
    batch2 = module.widen({k: v[:2] for k, v in batch.items()})
    scaled = module.weighted_losses(out, batch2)
    for t in module.tasks:
        raw = module.criteria[t](out[t], batch2[t]).float()
        assert scaled[t].item() == pytest.approx(raw.item() / measured[t], rel=1e-6)


def test_loss_scale_state_round_trip_and_mismatch():
    from crossvit_mtl.weighting.loss_scale import InitialLossScale

    scale = InitialLossScale(["segmentation", "depth"])
    assert scale.needs_measuring and scale.as_dict() == {"segmentation": 1.0, "depth": 1.0}
    scale.set_initial({"segmentation": 2.0, "depth": float("nan")})  # not finite: keeps 1
    state = scale.state()
    assert state == {"mode": "initial", "measured": True, "divisors": {"segmentation": 2.0, "depth": 1.0}}
    again = InitialLossScale(["segmentation", "depth"])
    again.load_state(state)
    assert not again.needs_measuring and again.as_dict() == scale.as_dict()
    assert "divisors" not in again.state_dict()  # saved beside the weights, not in them
    with pytest.raises(ValueError, match="differs from this run's .'none' over segmentation, depth."):
        InitialLossScale(["segmentation", "depth"], "none").load_state(state)
    with pytest.raises(ValueError, match="loss scaling must be one of initial, none"):
        InitialLossScale(["depth"], "running")
    assert not InitialLossScale(["depth"], "none").needs_measuring


def test_fit_measures_loss_scales_once_and_keeps_them_in_checkpoints(tmp_path, caplog):
    config = write_config(tmp_path / "c.yaml", data=MTL_DATA)
    run_dir = tmp_path / "run"
    assert main(["fit", "--config", config, "--run_dir", str(run_dir), "--report_samples", "0"]) == 0
    first, _ = caplog.text, caplog.clear()
    depth = DenseDataModule(**MTL_DATA).calibration_batch()["depth"]
    assert f"depth head: starts at {float(depth[depth > 0].median()):.3g}, the calibration batch's median" in first
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["loss_scale"]
    assert state["mode"] == "initial" and state["measured"]
    assert set(state["divisors"]) == {"segmentation", "depth", "classification"}
    assert all(v > 0 and v != 1.0 for v in state["divisors"].values())
    assert main(["fit", "--config", config, "--run_dir", str(run_dir), "--trainer.max_steps", "3",
                 "--ckpt_path", "last", "--report_samples", "0"]) == 0
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["loss_scale"]
    assert resumed == state  # measured once, at the start of the run, not again on resuming
    assert "loss scaling" in first and "depth head: starts at" not in caplog.text  # a resumed head keeps its weights


def test_a_new_run_starts_its_depth_head_without_loss_scaling_too(tmp_path, caplog):
    config = write_config(tmp_path / "c.yaml", data=MTL_DATA, model={"loss_scaling": "none"})
    assert main(["fit", "--config", config, "--run_dir", str(tmp_path / "run"), "--report_samples", "0",
                 "--trainer.max_steps", "1"]) == 0
    assert "depth head: starts at" in caplog.text and "loss scaling" not in caplog.text


def test_the_training_order_seed_is_the_data_modules_argument(fitted_run, monkeypatch):
    # the command line hands the run's seed_everything (42 by default) to the data module
    run_dir = fitted_run
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["seed_everything"] == 42 and saved["data"]["seed"] == 42
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # what Lightning's seeding leaves in the environment: not read
    data = {**TINY_DATA, "options": {"length": 8, "height": 32, "width": 64}}
    seeded, default = DenseDataModule(**data, seed=3), DenseDataModule(**data)
    assert seeded.train_dataloader().sampler.seed == 3 and default.train_dataloader().sampler.seed == 0
    assert not torch.equal(seeded.calibration_batch(4)["image"], default.calibration_batch(4)["image"])


def test_a_module_rebuilt_by_jsonargparse_keeps_plain_hyper_parameters(fitted_run, tmp_path):
    """load_from_checkpoint of a command-line checkpoint builds the module through the config's
    types again (restricted numbers); the hyper-parameters it saves still read back weights_only."""
    run_dir = fitted_run
    module = DenseTaskModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert type(module.hparams.lr) is float and type(module.hparams.max_nonfinite_steps) is int
    torch.save(dict(module.hparams), tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True)["lr"] == module.hparams.lr == 1e-3


def test_a_trainer_built_by_hand_gets_the_runs_callbacks(tmp_path, synth_cache):
    """training_callbacks is what the command line adds: with it a hand-built Trainer measures the
    loss scales, starts the depth head from the data and logs throughput once its window is full."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from crossvit_mtl.engine.callbacks import THROUGHPUT_WINDOW, training_callbacks
    from crossvit_mtl.viz.plots import read_metrics_csv

    # the session's cached scenes: the window's 21 steps read them rather than render each again
    dm = DenseDataModule(**{**MTL_DATA, "root": str(synth_cache), "options": None})
    module = DenseTaskModule("crossvit_mtl_tiny", TINY_OPTIONS, dataset_meta=dm.meta, scheduler="none")
    depth_bias = module.model.heads["depth"].conv[-1].bias.clone()
    trainer = pl.Trainer(max_steps=THROUGHPUT_WINDOW + 1, limit_val_batches=0, log_every_n_steps=1,
                         logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, precision="32-true", callbacks=training_callbacks(module))
    trainer.fit(module, datamodule=dm)
    assert module.loss_scale.measured and not module.loss_scale.needs_measuring
    assert not torch.equal(module.model.heads["depth"].conv[-1].bias, depth_bias)
    series = read_metrics_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    rates = [value for _, value in series["train/device/samples_per_sec"]]
    assert rates and all(rate > 0 for rate in rates)


def test_task_losses_are_logged_each_epoch_and_weights_on_the_logged_steps(tmp_path, synth_cache):
    """Each task's training loss is logged once an epoch, the average the weighting is handed; the
    task weights only on the steps the loggers write (every log_every_n_steps)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from crossvit_mtl.viz.plots import read_metrics_csv

    dm = DenseDataModule(**{**MTL_DATA, "root": str(synth_cache), "options": None})
    module = DenseTaskModule("crossvit_mtl_tiny", TINY_OPTIONS, dataset_meta=dm.meta, scheduler="none",
                             weighting="dwa")
    handed = []
    on_epoch_end = module.weighting.on_epoch_end
    module.weighting.on_epoch_end = lambda averages: (handed.append(dict(averages)), on_epoch_end(averages))
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=0, log_every_n_steps=3,
                         logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, precision="32-true")
    trainer.fit(module, datamodule=dm)
    series = read_metrics_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    assert len(handed) == 2
    for task in module.tasks:
        logged = [value for _, value in series[f"train/loss_{task}"]]
        assert logged == pytest.approx([epoch[task] for epoch in handed], rel=1e-6)
        assert [step for step, _ in series[f"train/weight_{task}"]] == [2, 5]  # steps 3 and 6 of 8


def test_model_options_type_every_option_of_every_architecture():
    """model.model_options is typed with every preset option (a new one without its type fails
    here); which architecture takes which stays the zoo's to say."""
    import inspect

    from crossvit_mtl.engine.options import ModelOptions
    from crossvit_mtl.models import ARCHITECTURES

    options = set()
    for cls in ARCHITECTURES.values():
        for klass in cls.__mro__:
            if "__init__" in vars(klass) and klass is not torch.nn.Module:
                params = inspect.signature(vars(klass)["__init__"]).parameters.values()
                options |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    assert options - {"self"} == set(ModelOptions.__annotations__)
