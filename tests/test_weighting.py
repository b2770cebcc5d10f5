import inspect
import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader
from torchjd import Stateful

from crossvit_mtl.engine.callbacks import training_callbacks
from crossvit_mtl.engine.datamodule import DenseDataModule
from crossvit_mtl.engine.module import DenseTaskModule
from crossvit_mtl.weighting import (
    AGGREGATORS,
    ALIASES,
    LOSS_WEIGHTINGS,
    WEIGHTINGS,
    FixedWeighting,
    SharedNetwork,
    WeightingOptions,
    build_weighting,
)

TINY = dict(dims=(32, 64), heads=(2, 2), stages=((1, 1, 1),), mlp_ratios=(2.0, 2.0, 2.0),
            decoder_channels=16, detail_channels=8, decoder_stages=1)
TASKS = ["segmentation", "depth", "normal", "classification"]


@pytest.fixture(scope="module")
def data():
    """Four synthetic scenes with all four tasks, two batches of two, and the data set's meta."""
    dm = DenseDataModule(dataset="synth", options={"length": 4, "height": 32, "width": 64},
                         batch_size=2, num_workers=0)
    dataset = dm.dataset(dm.hparams.train_split)
    return [dataset[i] for i in range(4)], dm.meta


def make_module(meta, weighting="ew", seed=0, model_options=None, **kwargs):
    pl.seed_everything(seed, verbose=False)
    kwargs.setdefault("scheduler", "none")
    return DenseTaskModule(model="crossvit_mtl_tiny", model_options={**TINY, **(model_options or {})},
                           weighting=weighting, dataset_meta=meta, **kwargs)


def fit(module, samples, precision="32-true", ckpt_path=None, **trainer_kwargs):
    """A Trainer built by hand, with the callbacks the command line adds."""
    trainer_kwargs.setdefault("max_steps", 2)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, precision=precision, limit_val_batches=0,
                         callbacks=training_callbacks(module), **trainer_kwargs)
    trainer.fit(module, train_dataloaders=DataLoader(samples, batch_size=2), ckpt_path=ckpt_path,
                weights_only=True if ckpt_path else None)
    return trainer


def step(weighting, *values):
    """One step of a loss weighting on losses with these values: the total, the weights it
    reports and the gradient its backward leaves on each loss."""
    leaves = [torch.tensor(v, requires_grad=True) for v in values]
    task_losses = dict(zip(TASKS, leaves))
    total = weighting(task_losses)
    weights = weighting.backward(total, task_losses, None)
    return total, weights, {t: leaf.grad for t, leaf in task_losses.items()}


# ------------------------------------------------------------ loss weightings, by hand
def test_fixed_weighting_is_the_sum_and_ew_is_fixed():
    total, weights, grads = step(build_weighting("fixed", TASKS), 1.0, 2.0, 3.0, 4.0)
    assert total.item() == pytest.approx(10.0)
    assert all(w.item() == 1.0 for w in weights.values()) and all(g.item() == 1.0 for g in grads.values())
    # equal weighting is the fixed weights' method with every weight 1: one class, both names accepted
    assert type(build_weighting("ew", TASKS)) is FixedWeighting and ALIASES == {"ew": "fixed"}


def test_uncertainty_weighting_follows_kendall():
    uw = build_weighting("uw", TASKS)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    total, weights, grads = step(uw, 1.0, 2.0, 3.0, 4.0)
    expected = sum(0.5 * math.exp(-s) * v + 0.5 * s for s, v in zip([0, 1, -1, 0.5], [1, 2, 3, 4]))
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weights["depth"].item() == pytest.approx(0.5 * math.exp(-1.0), rel=1e-6)
    assert grads["depth"].item() == pytest.approx(0.5 * math.exp(-1.0), rel=1e-6)
    assert uw.log_vars.grad is not None and uw.log_vars.grad.abs().sum() > 0  # the log-variances are learnt


def test_dwa_weights_from_the_last_two_epochs():
    dwa = build_weighting("dwa", TASKS, {"temperature": 2.0})
    dwa.on_epoch_end(dict(zip(TASKS, [2.0, 1.0, 1.0, 1.0])))
    assert all(w.item() == 1.0 for w in step(dwa, 1.0, 1.0, 1.0, 1.0)[1].values())  # one epoch: equal weights
    dwa.on_epoch_end(dict(zip(TASKS, [1.0, 1.0, 2.0, 1.0])))
    rates = [0.5, 1.0, 2.0, 1.0]
    norm = sum(math.exp(r / 2.0) for r in rates)
    total, weights, grads = step(dwa, 1.0, 1.0, 1.0, 1.0)
    for task, r in zip(TASKS, rates):
        assert weights[task].item() == pytest.approx(4 * math.exp(r / 2.0) / norm, rel=1e-6)
        assert grads[task].item() == pytest.approx(weights[task].item(), rel=1e-6)
    assert total.item() == pytest.approx(4.0, rel=1e-6)


def test_rlw_draws_fresh_weights_on_the_simplex_once_per_step():
    rlw = build_weighting("rlw", TASKS)
    (_, first, grads), (_, second, _) = (step(rlw, 1.0, 2.0, 3.0, 4.0) for _ in range(2))
    first_w, second_w = torch.stack(list(first.values())), torch.stack(list(second.values()))
    assert first_w.sum().item() == pytest.approx(1.0) and (first_w > 0).all()
    assert not torch.allclose(first_w, second_w)
    assert torch.equal(torch.stack(list(grads.values())), first_w)  # backward reports the weights it used


def test_gls_is_the_geometric_mean():
    total, weights, grads = step(build_weighting("gls", TASKS), 1.0, 2.0, 4.0, 8.0)
    assert total.item() == pytest.approx(64 ** 0.25, rel=1e-6)
    assert weights["normal"].item() == pytest.approx(64 ** 0.25 / (4 * 4.0), rel=1e-6)
    assert grads["normal"].item() == pytest.approx(weights["normal"].item(), rel=1e-5)


def test_every_name_is_a_method_and_every_option_is_typed():
    assert set(WEIGHTINGS) == set(LOSS_WEIGHTINGS) | set(AGGREGATORS) | set(ALIASES)
    typed = set(WeightingOptions.__annotations__)
    for name, cls in [*LOSS_WEIGHTINGS.items(), *AGGREGATORS.items()]:
        options = set(inspect.signature(cls.__init__).parameters) - {"self", "tasks"}
        # set by the engine (n_tasks), or not expressible in a config (functions, projector objects)
        assert options - {"n_tasks", "f", "projector"} <= typed, name
    assert "parallel_chunk_size" in typed  # every aggregator's, for torchjd's mtl_backward


def test_unknown_method_or_option_is_named():
    with pytest.raises(ValueError, match="got 'famous'"):
        build_weighting("famous", TASKS)
    with pytest.raises(ValueError, match="weighting_options for 'dwa'.*tempreature"):
        build_weighting("dwa", TASKS, {"tempreature": 2.0})
    with pytest.raises(ValueError, match="weighting_options for 'dwa': DWA temperature must be > 0, got -1"):
        build_weighting("dwa", TASKS, {"temperature": -1})
    with pytest.raises(ValueError, match="weighting_options for 'ew'.*temperature"):
        build_weighting("ew", TASKS, {"temperature": 2.0})


def test_gradient_method_needs_a_shared_network(data):
    _, meta = data
    seg_meta = {**meta, "task_channels": {"segmentation": 8}, "tasks": ["segmentation"]}
    with pytest.raises(ValueError, match="'upgrad' aggregates gradients.*'thesis_seg' has none"):
        DenseTaskModule(model="thesis_seg", weighting="upgrad", dataset_meta=seg_meta,
                        model_options={"embed_dim": 32, "num_heads": 2, "decoder_channels": 8})


# ------------------------------------------------------------ training through Lightning
@pytest.mark.parametrize("method", WEIGHTINGS)
def test_every_method_trains_two_steps(data, method):
    samples, meta = data
    module = make_module(meta, method)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = fit(module, samples)
    assert trainer.global_step == 2
    after = module.model.state_dict()
    for prefix in ("encoder.", "decoder.", *(f"heads.{t}." for t in TASKS)):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


@pytest.mark.parametrize("options", [{}, {"refine_heads": True}], ids=["plain", "refining_heads"])
@pytest.mark.parametrize("aggregator", ["sum", "mean"])
def test_torchjd_sum_and_mean_match_summed_losses(data, aggregator, options):
    """On the shared network the Jacobian's row sum is the gradient of the summed losses and its
    row mean that of the losses weighted 1/K; heads get their own loss's gradient, which matches
    the summed losses (weights 1) only."""
    samples, meta = data
    tasks = meta["tasks"]  # every task of the synthetic scenes, K of them
    reference = make_module(meta, "fixed", optimizer="sgd", weight_decay=0.0, model_options=options,
                            losses={t: {"weight": 1 / len(tasks) if aggregator == "mean" else 1.0} for t in tasks})
    jd = make_module(meta, aggregator, optimizer="sgd", weight_decay=0.0, model_options=options)
    assert jd.weighting.needs_network and not reference.weighting.needs_network
    for module in (reference, jd):
        fit(module, samples[:2], max_steps=1)
    compared = 0
    for (name, p), q in zip(reference.model.named_parameters(), jd.model.parameters()):
        if aggregator == "sum" or not name.startswith("heads."):
            assert torch.allclose(p, q, atol=1e-6, rtol=0), name
            compared += 1
    assert compared > 50


def test_aggregator_under_bf16_autocast_with_cross_task_attention_and_schedule(data):
    """Per-task maps from the cross-task attention are the shared features; it trains as shared."""
    samples, meta = data
    module = make_module(meta, "upgrad", scheduler="cosine", warmup_epochs=0.0,
                         model_options={"task_interaction": "cross_attention"})
    before = {k: v.clone() for k, v in module.model.task_interaction.state_dict().items()}
    trainer = fit(module, samples, precision="bf16-mixed")
    assert trainer.global_step == 2
    after = module.model.task_interaction.state_dict()
    for key in ("proj.depth.0.weight", "attn.segmentation.q.weight", "attn.normal.kv.weight"):
        assert not torch.equal(before[key], after[key]), key
    # the schedule stepped: cosine over 2 steps ends at min_lr_ratio * lr
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(1e-3 * 0.01)
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in module.parameters())


def test_uw_and_dwa_state_survive_a_checkpoint(data, tmp_path):
    samples, meta = data
    for method in ("uw", "dwa"):
        module = make_module(meta, method)
        trainer = fit(module, samples, max_steps=-1, max_epochs=2)
        state = module.weighting.state_dict()
        if method == "uw":  # the optimiser moved the log-variances
            assert module.weighting.log_vars.abs().sum() > 0
        else:  # two epochs of average losses, so the weights are no longer all ones
            assert int(module.weighting.epochs_seen) == 2
            ones = torch.ones(len(module.tasks))
            assert not torch.allclose(module.weighting.weights(ones), ones)
        path = tmp_path / f"{method}.ckpt"
        trainer.save_checkpoint(path)
        restored = DenseTaskModule.load_from_checkpoint(path, weights_only=False)
        assert restored.hparams.weighting == method
        for key, value in state.items():
            assert torch.equal(restored.weighting.state_dict()[key], value), key


# ------------------------------------------------------------ stateful aggregators across a resume
#: every torchjd aggregator in AGGREGATORS that keeps state between steps, with options under which
#: that state changes the next step: Nash-MTL re-solving every step converges to the same weights
#: from any start, so only a schedule (re-solve every other step) shows a lost state
STATEFUL = {"nashmtl": {"update_weights_every": 2}, "gradvac": {}}


def needs_solvers(method):
    if method == "nashmtl":
        for module in ("cvxpy", "ecos"):
            pytest.importorskip(module, reason=f"Nash-MTL needs {module} (torchjd[full])")


def aggregate_step(weighting, seed):
    """One backward through ``weighting`` on a tiny shared layer and per-task heads drawn from
    ``seed``: the task weights and the shared parameter's gradient."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.nn.Parameter(torch.randn(6, 4, generator=gen))
    heads = {t: torch.nn.Parameter(torch.randn(6, generator=gen)) for t in TASKS}
    x, y = torch.randn(5, 4, generator=gen), torch.randn(len(TASKS), 5, generator=gen)
    features = x @ shared.T
    task_losses = {t: ((features @ heads[t] - y[k]) ** 2).mean() for k, t in enumerate(TASKS)}
    torch.manual_seed(seed)  # GradVac draws its task order from the global generator
    network = SharedNetwork([features], [shared], {t: [heads[t]] for t in TASKS})
    weights = weighting.backward(weighting(task_losses), task_losses, network)
    return torch.stack([weights[t] for t in TASKS]), shared.grad


def test_every_stateful_aggregator_is_covered():
    assert {m for m, cls in AGGREGATORS.items() if issubclass(cls, Stateful)} == set(STATEFUL)


@pytest.mark.parametrize("method", sorted(STATEFUL))
def test_stateful_aggregator_continues_exactly_after_a_checkpoint(method, tmp_path):
    """Three steps, the state through the hooks and a torch.save / weights_only torch.load as a
    checkpoint is written and read, into a fresh aggregator: its next steps are the original's
    to the bit; a fresh one without the state takes another step."""
    needs_solvers(method)
    options = STATEFUL[method]
    original = build_weighting(method, TASKS, options)
    for seed in range(3):
        aggregate_step(original, seed)
    torch.save({"state_dict": original.state_dict(), "weighting_state": original.state_for_checkpoint()},
               tmp_path / "w.ckpt")
    checkpoint = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert checkpoint["weighting_state"] and not checkpoint["state_dict"]  # saved once, beside it
    resumed = build_weighting(method, TASKS, options)
    resumed.load_state_dict(checkpoint["state_dict"])
    resumed.load_state_from_checkpoint(checkpoint["weighting_state"])
    restarted = build_weighting(method, TASKS, options)
    for seed in (3, 4):
        weights, grad = aggregate_step(original, seed)
        got_weights, got_grad = aggregate_step(resumed, seed)
        assert torch.equal(weights, got_weights) and torch.equal(grad, got_grad), seed
        if seed == 3:
            lost_weights, lost_grad = aggregate_step(restarted, seed)
            assert not torch.equal(weights, lost_weights) and not torch.equal(grad, lost_grad)


def test_aggregator_state_that_cannot_be_restored_fails_in_one_line():
    gradvac = build_weighting("gradvac", TASKS)
    aggregate_step(gradvac, 0)
    state = gradvac.state_for_checkpoint()
    build_weighting("gradvac", TASKS).load_state_from_checkpoint({})  # older checkpoints: as built
    refusals = [
        (build_weighting("gradvac", TASKS, {"beta": 0.9}), state, "GradVac\\(beta=0.5.*beta=0.9"),
        (build_weighting("upgrad", TASKS), state, "saved by GradVac.*this run has UPGrad"),
        (build_weighting("ew", TASKS), state, "FixedWeighting: the checkpoint holds state of another"),
    ]
    tampered = {**state, "modules": {**state["modules"], "weighting.weighting": {
        **state["modules"]["weighting.weighting"], "rebuilt": ["_solver"]}}}
    refusals.append((build_weighting("gradvac", TASKS), tampered, "GradVacWeighting._solver could not be saved"))
    for weighting, saved, message in refusals:
        with pytest.raises(ValueError, match=message) as err:
            weighting.load_state_from_checkpoint(saved)
        assert "\n" not in str(err.value)
        if hasattr(weighting, "method"):
            assert str(err.value).startswith(f"weighting {weighting.method!r}: cannot restore")


def test_gradvac_state_goes_through_a_lightning_checkpoint(data, tmp_path):
    """GradVac's checkpoint (whose EMA buffer used to make the state dict unloadable) reads back
    with weights_only, restores the aggregator and resumes; one written before its state was
    saved apart still loads."""
    samples, meta = data
    trainer = fit(make_module(meta, "gradvac"), samples, max_steps=2)
    path = tmp_path / "gradvac.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert not any(".aggregator." in k for k in checkpoint["state_dict"])
    saved = checkpoint["weighting_state"]["modules"]["weighting.weighting"]["attributes"]
    assert saved["_phi_t"].abs().sum() > 0
    restored = DenseTaskModule.load_from_checkpoint(path, weights_only=True).weighting.aggregator.gramian_weighting
    assert torch.equal(restored._phi_t, saved["_phi_t"]) and restored._state_key == saved["_state_key"]
    resumed = fit(make_module(meta, "gradvac"), samples, max_steps=4, ckpt_path=path)
    assert resumed.global_step == 4
    del checkpoint["weighting_state"]
    checkpoint["state_dict"]["weighting.aggregator.gramian_weighting._phi_t"] = saved["_phi_t"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = DenseTaskModule.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=True)
    assert old.weighting.aggregator.gramian_weighting._phi_t is None  # as built: the state was not saved
