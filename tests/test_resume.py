"""Resume after a crash: the training order, augmentation and RNG states survive a SIGKILL, so a
killed and resumed run ends bit-exactly where an uninterrupted one does."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from crossvit_mtl.data.base import to_tensors
from crossvit_mtl.data.synth import SynthScenes
from crossvit_mtl.data.transforms import build_transforms
from crossvit_mtl.engine.sampling import ResumableSampler, capture_rng_states, restore_rng_states
from fixtures_run import TINY_OPTIONS, tiny_config, write_config


# Drop-path makes every step draw from the global RNG and the default augmentation draws per sample,
# so the comparison fails unless the RNG states, the data order and the augmentation seeds are all
# restored (a worker process loads the batches). The tiny run on the session's 32 cached scenes:
# 8 steps per epoch, 3 epochs, a mid-epoch checkpoint every 3 steps.
def config(cache) -> dict:
    return tiny_config(model={"warmup_epochs": 0.5,
                              "model_options": {**TINY_OPTIONS, "stages": [[2, 2, 1]], "drop_path_rate": 0.3}},
                       data={"root": str(cache), "options": None, "tasks": None, "batch_size": 4, "num_workers": 1,
                             "eval_batch_size": 8},
                       trainer={"max_steps": None, "max_epochs": 3, "limit_test_batches": None, "log_every_n_steps": None},
                       checkpoint_every_n_steps=3)


def _command(*args):
    return [sys.executable, "-m", "crossvit_mtl", *args]


def _env():
    """The environment of a fresh shell: nothing an earlier test's seeding or process group left
    (Lightning's PL_* variables, torch.distributed's rank variables) reaches the runs."""
    leaked = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PL_") and k not in leaked}
    return {**env, "PYTHONWARNINGS": "ignore"}


def _global_step(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["global_step"]
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return -1


@pytest.mark.heavy
def test_sigkill_then_resume_is_bit_exact(tmp_path, synth_cache):
    write_config(tmp_path / "config.yaml", config(synth_cache))
    assert len(np.load(synth_cache / "train" / "images.npy", mmap_mode="r")) == 32
    fit = ("fit", "--config", "config.yaml")
    # The uninterrupted run beside the one that is killed: two processes of their own either way.
    with open(tmp_path / "whole.log", "w") as log:
        whole_proc = subprocess.Popen(_command(*fit, "--run_dir", "whole"), cwd=tmp_path, env=_env(),
                                      stdout=log, stderr=subprocess.STDOUT)
    # Killed mid-epoch, at whatever point it is at once a mid-epoch checkpoint exists.
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_command(*fit, "--run_dir", "killed"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while _global_step(last) < 9 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        assert whole_proc.wait(timeout=600) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = _global_step(last)
    assert 0 < killed_at < 24 and killed_at % 8, f"not a mid-epoch checkpoint: step {killed_at}"

    resumed = subprocess.run(_command(*fit, "--run_dir", "killed", "--ckpt_path", "last"), cwd=tmp_path,
                             env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr

    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    again = torch.load(last, weights_only=True)
    assert whole["global_step"] == again["global_step"] == 24
    assert whole["state_dict"].keys() == again["state_dict"].keys()
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key
    for a, b in zip(whole["optimizer_states"][0]["state"].values(),
                    again["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text())["results"] for run in ("whole", "killed")]
    assert metrics[0] == metrics[1]


def test_sampler_order_is_a_function_of_seed_and_epoch():
    data = list(range(10))
    a, b = ResumableSampler(data, seed=3), ResumableSampler(data, seed=3)
    first = list(a)
    assert sorted(i for i, _ in first) == data
    assert first == list(b)
    second = list(a)  # each iteration is the next epoch
    assert second != first and second == [tuple(p) for p in zip(*a.order(1))]
    assert first != list(ResumableSampler(data, seed=4))


def test_sampler_resumes_mid_epoch_and_after_a_finished_epoch():
    data = list(range(10))
    sampler = ResumableSampler(data, seed=0)
    full = [list(sampler), list(sampler)]  # epochs 0 and 1
    mid = ResumableSampler(data, seed=0)
    mid.load_state_dict(sampler.state_dict(samples_done=4, epoch_finished=False) | {"epoch": 1})
    assert list(mid) == full[1][4:]
    assert list(mid) == [tuple(p) for p in zip(*mid.order(2))]  # then the next epoch, whole
    done = ResumableSampler(data, seed=0)
    state = ResumableSampler(data, seed=0).state_dict(samples_done=10, epoch_finished=True)
    assert state == {"epoch": 1, "samples_done": 0}
    done.load_state_dict(state)
    assert list(done) == full[1]


def test_sampler_shards_cover_the_data_once_per_rank_pair():
    data = list(range(11))
    shards = []
    for rank in range(2):
        indices, seeds = ResumableSampler(data, seed=0, num_replicas=2, rank=rank).order(0)
        shards.append(indices)
        assert len(seeds) == len(indices)
    assert len(shards[0]) == len(shards[1]) == 6
    assert set(shards[0]) | set(shards[1]) == set(data)


def test_seeded_sample_ignores_and_keeps_the_global_rng():
    dataset = SynthScenes(length=2, height=32, width=64)
    dataset.transform = build_transforms(dataset.info, train=True)
    torch.manual_seed(0)
    a = dataset[(1, 1234)]
    state = torch.get_rng_state()
    torch.manual_seed(99)
    b = dataset[(1, 1234)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    dataset[(1, 1234)]
    assert torch.equal(torch.get_rng_state(), state)  # untouched by the sample's own draws
    c = dataset[(1, 999)]
    assert not torch.equal(a["image"], c["image"])
    torch.manual_seed(1234)  # the sample's draws are the CPU generator's stream from its seed
    expected = dataset.transform(to_tensors(dataset.load(1)))
    assert all(torch.equal(a[k], expected[k]) for k in a)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(5)
    states = capture_rng_states()
    expected = (torch.rand(3), np.random.rand(3).tolist(), random.random())
    torch.save(states, tmp_path / "rng.pt")
    torch.manual_seed(6)
    restore_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3).tolist(), random.random())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]
