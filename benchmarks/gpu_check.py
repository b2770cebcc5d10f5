"""Everything that runs on a GPU, checked in one go on a machine with a CUDA device (planned for
at most 10 minutes on one GPU; the report gives the time taken): the tests marked ``cuda``
(``tests/test_cuda.py``: every preset's forward and backward against CPU fp32, a two-step `fit`,
`predict` and `export` on CUDA, a bench case),
then `crossvit-mtl bench --quick` on the GPU: the zoo and SegFormer-B0 at 128x256 in the device's
default precision and fp32, crossvit_seg_small and SegFormer-B0 at 512x1024.

    make gpu-check           # or: python benchmarks/gpu_check.py [--out gpu-check] [--device cuda:0]

Writes OUT/gpu_check.json (the device, each test's outcome, the bench report) and OUT/gpu_check.md
(the same as tables). Exits 1 if a test failed or was skipped or a bench case failed, 2 without a
CUDA device or without HF transformers (SegFormer-B0).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest
import torch

from crossvit_mtl import bench
from crossvit_mtl.engine.precision import resolve

TESTS = Path(__file__).resolve().parents[1] / "tests"
LARGE = (512, 1024)


class Outcomes:
    """pytest plugin: each test's outcome, seconds and, unless it passed, the reason."""

    def __init__(self):
        self.tests: list[dict] = []

    def pytest_runtest_logreport(self, report):
        if report.when != "call" and report.passed:  # set-up and tear-down count when they fail or skip
            return
        message = None
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            message = reason.removeprefix("Skipped: ")
        elif report.failed:
            message = (report.longreprtext.strip().splitlines() or [""])[-1][:300]
        self.tests.append({"test": report.nodeid, "stage": report.when, "outcome": report.outcome,
                           "seconds": round(report.duration, 2), "message": message})


def run_tests() -> tuple[list[dict], list[str]]:
    outcomes = Outcomes()
    code = pytest.main(["-m", "cuda", "-q", "-p", "no:cacheprovider", str(TESTS)], plugins=[outcomes])
    failures = [f"{t['test']} ({t['stage']}): {t['outcome']}: {t['message']}" for t in outcomes.tests
                if t["outcome"] != "passed"]
    if not outcomes.tests:
        failures.append("no test marked cuda ran")
    elif code != 0 and not failures:
        failures.append(f"pytest exited with code {int(code)}")
    return outcomes.tests, failures


def bench_cases(device: str) -> list[bench.Case]:
    quick = dict(repeats=3, latency_runs=5, device=device)  # as `crossvit-mtl bench --quick`
    return (bench.plan(bench.DEFAULT_MODELS, [bench.BASE_SIZE], ("auto", "fp32"), **quick)
            + bench.plan(bench.LARGE_SIZE_MODELS, [LARGE], ("auto", "fp32"), **quick))


def markdown(summary: dict, tests: list[dict], report: dict) -> str:
    lines = [f"# GPU check: {'passed' if not summary['failures'] else 'FAILED'}", "",
             f"{summary['device']} ({summary['device_name']}), torch {summary['torch']}, CUDA {summary['cuda']}; "
             f"{summary['placement']}. Took {summary['seconds']['total'] / 60:.1f} min (tests "
             f"{summary['seconds']['tests']:.0f} s, bench {summary['seconds']['bench']:.0f} s).", ""]
    if summary["failures"]:
        lines += ["Failures:", ""] + [f"- {f}" for f in summary["failures"]] + [""]
    lines += ["| test | outcome | s |", "|---|---|---:|"]
    for t in tests:
        outcome = t["outcome"] + (f": {t['message']}" if t["message"] else "")
        lines.append(f"| {t['test']} | {outcome} | {t['seconds']:.1f} |")
    return "\n".join(lines + ["", "## bench --quick", "", report["markdown"]]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default: the current CUDA device)")
    args = parser.parse_args()
    try:
        placement = resolve(args.device)
        if placement.device.type != "cuda":
            raise ValueError(f"--device {args.device}: the GPU check needs a CUDA device")
        import transformers  # noqa: F401  (SegFormer-B0, the bench's peer)
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except ImportError:
        parser.exit(2, f"{parser.prog}: error: SegFormer-B0 needs HF transformers: pip install 'crossvit-mtl[bench]'\n")
    torch.cuda.set_device(placement.device)  # the tests run on the current device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tests, failures = run_tests()
    tested = time.perf_counter()
    report = bench.benchmark(bench_cases(str(placement.device)))
    failures += [f"bench {r['label']}: {r['error']}" for r in report["results"] if r["error"]]
    done = time.perf_counter()
    summary = {"passed": not failures, "failures": failures, "device": str(placement.device),
               "device_name": placement.name, "placement": str(placement), "torch": torch.__version__,
               "cuda": torch.version.cuda, "seconds": {"tests": tested - start, "bench": done - tested,
                                                       "total": done - start}}
    (out / "gpu_check.json").write_text(json.dumps(
        {**summary, "tests": tests, "bench": {k: v for k, v in report.items() if k != "markdown"}}, indent=2))
    (out / "gpu_check.md").write_text(markdown(summary, tests, report))
    print(f"GPU check {'passed' if not failures else 'FAILED'} in {summary['seconds']['total'] / 60:.1f} min; "
          f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
