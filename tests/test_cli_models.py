import pytest

from crossvit_mtl.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "models" in out and "demo" in out


def test_models_table_lists_presets_with_figures(capsys):
    assert main(["models", "--pattern", "crossvit_seg_*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | outputs | params (M) | GFLOPs fwd @ 128x256 |")
    rows = {line.split("|")[1].strip(): line.split("|") for line in lines[2:]}
    assert set(rows) == {"crossvit_seg_tiny", "crossvit_seg_small", "crossvit_seg_base"}
    params = {k: float(v[3]) for k, v in rows.items()}
    gflops = {k: float(v[4]) for k, v in rows.items()}
    assert params["crossvit_seg_tiny"] < params["crossvit_seg_small"] < params["crossvit_seg_base"]
    assert 0 < gflops["crossvit_seg_tiny"] < gflops["crossvit_seg_small"] < gflops["crossvit_seg_base"]


def test_bad_size_is_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["models", "--size", "128by256"])
    assert exc.value.code == 2
    assert "size must look like HxW (e.g. 128x256), got '128by256'" in capsys.readouterr().err


@pytest.mark.heavy
def test_printed_commands_name_the_script_or_interpreter_that_runs_now(tmp_path, monkeypatch):
    import shlex
    import subprocess
    import sys

    from crossvit_mtl.cli.args import own_command

    monkeypatch.setattr(sys, "argv", ["/no/such/pytest"])
    fallback = own_command()
    assert shlex.split(fallback) == [sys.executable, "-m", "crossvit_mtl"]
    assert subprocess.run([*shlex.split(fallback), "--help"], capture_output=True).returncode == 0
    script = tmp_path / "my bin" / "crossvit-mtl"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert shlex.split(own_command()) == [str(script)]
