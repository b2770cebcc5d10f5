"""Session fixtures: what several test files share and only one needs to make.

- ``synth_cache``: the synthetic scenes written once, in the cache format ``crossvit-mtl data synth``
  writes (32x64; 32 train, 4 val, 4 test scenes), for runs that read more scenes than they
  should render (``tiny_config(data={"root": str(synth_cache), "options": None})``).
- ``fitted_run``: the tiny run (``fixtures_run.TINY``, every task the scenes have but edges, the
  report's samples drawn) fitted and tested once. Read-only: a test that changes a run copies it
  first (``shutil.copytree``).
- ``tiny_config``: ``fixtures_run.tiny_config``, for tests that take their helpers as fixtures.
- every test starts from the same global random state (``same_draws_in_any_order``).

A new test that trains a model starts from ``tiny_config`` and changes only what it is about.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures_run import tiny_config as _tiny_config
from fixtures_run import write_config


def _workers() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pytest_configure(config) -> None:
    """Under pytest-xdist, cores / workers threads per worker and per process it starts: OpenMP
    threads that outnumber the cores spin against each other, and so do the compiler processes
    torch.compile starts (one per core by default)."""
    if _workers() > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // _workers())
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(threads)  # the processes a test starts
        import torch._inductor.config  # read its environment at import, maybe already done

        torch._inductor.config.compile_threads = threads
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist, the tests marked ``heavy`` first (their order among themselves kept):
    handed out one at a time (``--maxschedchunk 1``), they spread over the workers, and the short
    tests after them even out the end instead of one worker finishing a long test alone."""
    if _workers() > 1:
        items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture(autouse=True)
def same_draws_in_any_order():
    """Every test starts from the same global random state (torch, numpy, random), so what it draws
    does not depend on which tests ran before it in its worker: a failure comes back when the test
    runs alone."""
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


#: the cache's scenes per split
SYNTH_COUNTS = {"train": 32, "val": 4, "test": 4}


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    from crossvit_mtl.data.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("synth") / "cache", height=32, width=64, **SYNTH_COUNTS)


@pytest.fixture(scope="session")
def tiny_config():
    return _tiny_config


@pytest.fixture(scope="session")
def fitted_run(tmp_path_factory) -> Path:
    """Run folder of the tiny run's fit and its test (config.yaml beside it as ``../config.yaml``)."""
    from crossvit_mtl.cli import main

    root = tmp_path_factory.mktemp("fitted_run")
    config = write_config(root / "config.yaml", _tiny_config(report_samples=2))
    run_dir = root / "run"
    assert main(["fit", "--config", config, "--run_dir", str(run_dir)]) == 0
    assert main(["test", "--config", config, "--run_dir", str(run_dir),
                 "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]) == 0
    return run_dir
