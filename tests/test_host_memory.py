import json
import subprocess
import sys

import pytest

from crossvit_mtl.engine import host_memory

# A training step in miniature, twelve times: four large blocks (16-48 MB) allocated, touched
# and freed. glibc maps blocks this large afresh and unmaps them on free, so without the
# setting every step faults in every page again; with it, freed blocks are reused.
PROBE = """
import json, resource, torch
from crossvit_mtl.engine.host_memory import keep_host_memory
applied = keep_host_memory()
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(n * 2**20).fill_(1.0) for n in (16, 32, 48, 16)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""
PAGES_PER_STEP = (16 + 32 + 48 + 16) * 2**20 * 4 // 4096


def _probe(opt_out: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", host_memory.OPT_OUT: opt_out}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.heavy
def test_freed_blocks_are_reused_instead_of_faulted_in_every_step():
    kept, system = _probe("0"), _probe("1")
    assert kept["applied"] and not system["applied"]
    later = slice(2, None)  # the heap has grown to the step's size after the first steps
    assert min(system["faults"][later]) > 0.9 * PAGES_PER_STEP  # every page, every step
    assert sum(kept["faults"][later]) < 0.25 * sum(system["faults"][later])


def test_the_setting_is_stated_and_can_be_declined(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "keep_host_memory", lambda: calls.append(1) or True)
    assert host_memory.apply_host_memory(True) == "host memory: glibc's allocator as it is (--system_malloc)"
    assert calls == []
    assert host_memory.apply_host_memory(False).startswith("host memory: freed blocks kept for reuse")
    assert calls == [1]


def test_commands_that_neither_train_nor_predict_leave_the_allocator_alone(monkeypatch, tmp_path, capsys):
    from crossvit_mtl.cli import main

    calls = []
    monkeypatch.setattr(host_memory, "keep_host_memory", lambda: calls.append(1) or True)
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert main(["data", "check", str(tmp_path)]) in (1, 2)
    assert calls == [] and "host memory" not in capsys.readouterr().out
