"""The HTML report of a tiny run: well-formed, complete, every figure an inline PNG; and a headless
Chromium shows it without console errors and with every image decoded."""
import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image

from crossvit_mtl.cli import main
from crossvit_mtl.viz.report import build_report, fmt

VOID = {"meta", "img", "br", "hr", "input", "link", "col", "area", "base", "source", "wbr"}


class StrictParser(HTMLParser):
    """Collects <img> sources and fails on any unbalanced tag."""

    def __init__(self):
        super().__init__()
        self.stack, self.images = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


@pytest.fixture(scope="module")
def report(fitted_run):
    run_dir = fitted_run
    assert main(["report", str(run_dir)]) == 0
    return run_dir, run_dir / "report.html"


def test_report_is_complete_and_self_contained(report):
    run_dir, path = report
    page = path.read_text(encoding="utf-8")
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert not parser.stack
    assert not re.search(r"""(src|href)=["'](?!data:)""", page), "no external resources"
    for name in ("metrics.json", "metrics_test.json"):
        results = json.loads((run_dir / name).read_text())["results"]
        assert set(results) == {"segmentation", "depth", "normal", "classification"}
        for values in results.values():
            for key, value in values.items():
                if isinstance(value, float):
                    assert f"<td>{fmt(value)}</td>" in page, (name, key)
        for cls, iou in results["segmentation"]["iou_per_class"].items():
            assert f"<td>{cls}</td>" in page and fmt(iou) in page
    assert page.count("Confusion matrix") == 2 and "Training curves" in page
    assert len(parser.images) == 3  # curves, validation and test samples
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            assert img.format == "PNG" and img.size[0] > 50


def test_report_needs_metrics(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def chromium_check(path, profile):
    """(body attributes after load, console lines) as headless Chromium sees the page."""
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
           "--dump-dom", path.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", done.stdout)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body.group(1) if body else "")), console


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.heavy
def test_chromium_renders_report_without_errors(report, tmp_path):
    _, path = report
    attrs, console = chromium_check(path, tmp_path / "profile")
    assert console == []
    assert attrs == {"data-images-loaded": "3", "data-images-broken": "0"}
    # the same check on a page with a broken image and a script error must fail
    page = path.read_text(encoding="utf-8").replace("<h1>", '<img src="data:image/png;base64,AAAA">'
                                                           "<script>undefined_call()</script><h1>", 1)
    broken = tmp_path / "broken.html"
    broken.write_text(page, encoding="utf-8")
    attrs, console = chromium_check(broken, tmp_path / "profile2")
    assert attrs["data-images-broken"] == "1" and any("undefined_call" in line for line in console)


def test_build_report_draws_missing_curves(report, tmp_path):
    run_dir, _ = report
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (copy / "plots" / "curves.png").unlink()
    out = build_report(copy, tmp_path / "r.html")
    assert (copy / "plots" / "curves.png").is_file() and "Training curves" in out.read_text()
