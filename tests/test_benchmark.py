import json
from types import SimpleNamespace

import pytest
import torch

from crossvit_mtl import bench
from crossvit_mtl.bench import Case, profile, report
from crossvit_mtl.cli import build_parser
from crossvit_mtl.engine.optim import build_optimizer
from crossvit_mtl.engine.precision import resolve

PEAKS = {"fp32": 0.3, "bf16": 1.5}


def test_model_specs_parse_overrides():
    assert bench.parse_model("thesis_seg:decoder_channels=128") == ("thesis_seg", {"decoder_channels": 128})
    assert bench.parse_model("crossvit_seg_small") == ("crossvit_seg_small", {})
    assert bench.parse_model("x:stages=[[1,2,1],[1,2,1]],heads=(2,3),fusion=cls") == (
        "x", {"stages": [[1, 2, 1], [1, 2, 1]], "heads": (2, 3), "fusion": "cls"})
    with pytest.raises(ValueError, match="key=value"):
        bench.parse_model("thesis_seg:128")
    with pytest.raises(ValueError, match="unknown dense model 'crossvit_tiny_224'"):
        bench.build_model("crossvit_tiny_224", (128, 256))


def test_default_plan_adds_large_sizes_for_the_default_preset_only():
    cases = bench.plan(precisions=("fp32",))
    sizes = {}
    for case in cases:
        sizes.setdefault(case.model, []).append(case.size)
    assert sizes["crossvit_seg_small"] == [(128, 256), (256, 512), (512, 1024)]
    assert sizes["segformer_b0"] == [(128, 256), (256, 512), (512, 1024)]
    assert sizes["thesis_seg:decoder_channels=128"] == [(128, 256)] * 2  # and fp32 with the system malloc
    grid = bench.plan(["crossvit_seg_tiny"], [(64, 128)], ("bf16", "fp32"), (8, 16), ("eager", "compile"))
    assert len({bench.describe(c) for c in grid}) == len(grid) == 8
    with pytest.raises(ValueError, match="variant"):
        bench.plan(variants=("fast",))
    both = bench.plan(["crossvit_seg_tiny"], [(64, 128)], ("fp32",), allocators=("kept", "system"))
    assert [c.system_malloc for c in both] == [False, True]
    with pytest.raises(ValueError, match="allocator must be one of"):
        bench.plan(allocators=("jemalloc",))


def test_thesis_target_is_measured_against_plain_and_same_allocator_fp32():
    cases = bench.plan([bench.THESIS_TARGET], precisions=("bf16", "fp32"))
    assert [(c.precision, c.system_malloc) for c in cases] == [("bf16", False), ("fp32", False), ("fp32", True)]
    assert bench.describe(cases[2]).endswith("fp32 b8 eager, system malloc")
    results = [bench.Result(c, train_img_s=s, train_img_s_best=s) for c, s in zip(cases, (6.0, 3.0, 2.0))]
    summary = bench.summarize(results, "bf16", PEAKS)
    assert summary["thesis_seg_dc128_default_vs_fp32_eager_train_speedup"] == 3.0
    assert summary["thesis_seg_dc128_default_vs_fp32_train_speedup"] == 2.0
    assert summary["matmul_peak_bf16_over_fp32"] == 5.0


def test_synthetic_targets_cover_every_task():
    model = bench.build_model("crossvit_mtl_tiny", (32, 64))
    images, targets = bench.synthetic_batch(model, (32, 64), 2)
    assert images.shape == (2, 3, 32, 64)
    assert set(targets) == {"segmentation", "depth", "normal", "classification"}
    assert targets["segmentation"].shape == (2, 32, 64) and targets["classification"].shape == (2,)
    assert torch.allclose(targets["normal"].norm(dim=1), torch.ones(2, 32, 64), atol=1e-5)


def test_segformer_peer_predicts_at_full_resolution():
    pytest.importorskip("transformers")
    out = bench.build_model("segformer_b0", (64, 128)).eval()(torch.randn(1, 3, 64, 128))
    assert out["segmentation"].shape == (1, 8, 64, 128)


@pytest.mark.heavy
def test_benchmark_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr("crossvit_mtl.bench.report.machine_peaks", lambda device: PEAKS)
    cases = [Case("crossvit_seg_tiny", (32, 64), "fp32", batch_size=2, repeats=1, warmup=1, latency_runs=1),
             Case("crossvit_seg_tiny:no_such_option=1", (32, 64), "fp32", repeats=1)]
    report = bench.benchmark(cases, tmp_path, progress=None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    ok, failed = saved["results"]
    assert ok["error"] is None and failed["error"].startswith("ValueError")
    assert ok["train_img_s"] > 0 and ok["latency_ms"] > 0 and ok["gflops_fwd"] > 0
    assert ok["gflops_train"] > ok["gflops_fwd"]
    assert ok["fraction_of_peak"] == pytest.approx(ok["achieved_gflop_s"] / 300)
    table = (tmp_path / "bench.md").read_text().splitlines()
    assert table[0].startswith("| model | size | precision | batch | variant |")
    assert len({line.count("|") for line in table[:4]}) == 1  # failed rows keep the column count
    assert "| crossvit_seg_tiny | 32x64 | fp32 | 2 | eager |" in table[2]


def test_bench_command_is_registered():
    args = build_parser().parse_args(["bench", "--models", "crossvit_seg_tiny", "--sizes", "64x128", "--quick"])
    assert args.sizes == [(64, 128)] and args.quick and callable(args.func)


def test_a_kept_allocator_case_run_with_the_opt_out_is_labelled_system(monkeypatch):
    monkeypatch.setenv("CROSSVIT_MTL_SYSTEM_MALLOC", "1")
    case = Case("crossvit_seg_tiny", (32, 64), "fp32", batch_size=1, repeats=1, warmup=1, latency_runs=1)
    result = bench.measure_case(case)
    assert not case.system_malloc and result.case.system_malloc
    assert bench.describe(result.case).endswith("eager, system malloc")


def test_cuda_plan_and_report_name_the_gpu_and_its_measures(monkeypatch):
    from test_precision import fake_cuda

    fake_cuda(monkeypatch, (7, 5), name="Old GPU")
    cases = bench.plan([bench.THESIS_TARGET], precisions=("auto", "fp32"), device="cuda:0")
    # fp16 by the device's rule; no system-allocator baseline, which is about host memory
    assert [(c.precision, c.system_malloc, c.device) for c in cases] == [("fp16", False, "cuda:0"),
                                                                          ("fp32", False, "cuda:0")]
    results = [bench.Result(c, gflops_train=2.0, train_img_s=10.0, train_img_s_best=11.0) for c in cases]
    peaks = {"fp32": 0.05, "fp32 torch.mm": 0.04, "fp32 cuDNN": 0.05, "fp32 torch.mm TF32": 0.04}
    report = bench.make_report(results, peaks, None, None, "cuda:0")
    assert report["machine"]["device"] == "cuda:0" and report["machine"]["device_name"] == "Old GPU"
    assert report["default_precision"] == "fp16" and "compute capability 7.5" in report["default_precision_reason"]
    fp16, fp32 = report["results"]
    assert fp16["fraction_of_peak"] is None and fp32["fraction_of_peak"] == pytest.approx(20 / 50)
    lines = report["markdown"].splitlines()
    assert "| train peak CUDA +MB |" in lines[0] and "| - |" in lines[2] and "| 40.0 |" in lines[3]
    text = report["markdown"]
    assert "Device: cuda:0 (Old GPU)" in text and "timed between CUDA events" in text
    assert "fp32 0.05 TFLOP/s (torch.mm 0.04, cuDNN 0.05, torch.mm TF32 0.04)" in text
    assert "torch.cuda.max_memory_allocated" in report["memory_method"]
    with pytest.raises(ValueError, match="one bench runs on one device"):
        bench.benchmark([Case("crossvit_seg_tiny"), Case("crossvit_seg_tiny", device="cuda:0")])


def test_cpu_matrix_peaks_name_both_libraries():
    peaks = bench.matmul_peaks(torch.float32, n=128, runs=1)
    assert set(peaks) == {"torch.mm", "oneDNN"} and min(peaks.values()) > 0


def _event(name, parent=None, self_us=0.0):
    return SimpleNamespace(name=name, cpu_parent=parent, self_cpu_time_total=self_us,
                           device_type=torch.autograd.DeviceType.CPU)


def test_operators_fall_in_the_category_of_what_encloses_them():
    step = _event("Optimizer.step#AdamW.step")
    cast = _event("aten::_to_copy", _event("aten::to", _event("aten::linear")))
    assert profile.categorize(_event("aten::copy_", cast)) == "precision casts"
    assert profile.categorize(_event("aten::copy_", _event("aten::clone", _event("aten::reshape")))) == "layout changes"
    assert profile.categorize(_event("aten::mm", _event("aten::linear"))) == "matrix products"
    assert profile.categorize(_event("aten::bmm", _event("aten::matmul"))) == "attention"
    assert profile.categorize(_event("aten::mul_", _event("aten::add_", step))) == "optimiser"
    assert profile.categorize(_event("aten::copy_", _event("aten::_to_copy", step))) == "optimiser"
    assert profile.categorize(_event("aten::add", None)) == "other elementwise"
    events = [_event("aten::mm", None, 30.0), _event("aten::gelu", None, 20.0), _event("aten::add", None, 10.0)]
    out = profile.breakdown(events, wall_us=100.0)
    assert out["matrix products"] == 30.0 and out["activations"] == 20.0 and out["other elementwise"] == 10.0
    assert out["outside operators"] == 40.0 and sum(out.values()) == 100.0
    assert list(out) == list(profile.CATEGORIES)


def test_a_profiled_bf16_step_accounts_for_its_wall_time():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.LayerNorm(64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.05)
    x = torch.randn(16, 32)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16):
            out = model(x)
        out.float().square().mean().backward()
        optimizer.step()

    result = profile.profile_calls(step, calls=2, warmup=1)
    categories = result["categories_us"]
    for name in ("matrix products", "normalisation", "activations", "precision casts", "optimiser"):
        assert categories[name] > 0, name
    assert sum(categories.values()) == pytest.approx(result["profiled_ms"] * 1e3, rel=1e-6)
    assert sum(profile.shares(categories).values()) == pytest.approx(1.0)
    assert result["ops_per_call"] > 10 and result["plain_ms"] > 0


def test_rounds_give_medians_and_ratios_taken_within_each_round():
    ours, peer = Case("crossvit_seg_small"), Case("segformer_b0")
    speeds = [(30.0, 30.0), (40.0, 20.0), (33.0, 22.0)]  # per round: ratios 1.0, 2.0, 1.5
    rounds = [[bench.Result(ours, train_img_s=a, train_img_s_best=a + 1, latency_ms=10.0, latency_ms_best=9.0,
                            train_step_ms=[1.0]),
               bench.Result(peer, train_img_s=b, train_img_s_best=b + 1, latency_ms=12.0, latency_ms_best=11.0,
                            train_step_ms=[2.0])] for a, b in speeds]
    combined = report.combine(rounds)
    assert [r.train_img_s for r in combined] == [33.0, 22.0]  # medians of each case alone
    assert [r.train_img_s_best for r in combined] == [41.0, 31.0] and combined[0].train_step_ms == [1.0] * 3
    summary = report.summarize_rounds(rounds, "bf16", PEAKS)
    assert summary["crossvit_seg_small_vs_segformer_b0_bf16_train_ratio"] == 1.5  # not 33 / 22
    made = report.make_report(rounds[-1], PEAKS, None, None, rounds=rounds)
    assert made["rounds"] == 3
    assert made["summary"] == report.summarize_rounds(rounds, resolve("cpu").precision, PEAKS)
    assert "ran 3 times" in made["markdown"]
    assert report.combine([[bench.Result(ours, error="boom")]] * 2)[0].error == "boom"
