"""The import structure: no circle between modules, and the layers below the engine free of
Lightning at run time. `lint-imports` (pyproject's [tool.importlinter]) checks the layer contract
in CI; this checks what it does not: a package and its own modules importing each other."""
from __future__ import annotations

import os
import subprocess
import sys

import grimp
import pytest


def _cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), lazy imports included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    assert _cycles(grimp.build_graph("crossvit_mtl")) == []


def test_the_cycle_finder_finds_a_package_and_its_module_importing_each_other():
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.delta", "pkg.other"):
        graph.add_module(module)
    graph.add_import(importer="pkg", imported="pkg.delta")
    graph.add_import(importer="pkg.delta", imported="pkg")
    graph.add_import(importer="pkg.other", imported="pkg")
    assert _cycles(graph) == [["pkg", "pkg.delta"]]


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_model_zoo_and_inference_load_weights_without_lightning(tmp_path):
    path = tmp_path / "w.safetensors"
    code = (f"from crossvit_mtl.models import create_model\n"
            f"from crossvit_mtl.serialization import save_weights\n"
            f"import crossvit_mtl.inference, crossvit_mtl.export\n"
            f"save_weights(create_model('crossvit_seg_tiny', img_size=(32, 64)), {str(path)!r})\n"
            f"create_model('crossvit_seg_tiny', weights={str(path)!r}, img_size=(32, 64))")
    modules = _imported_after(code)
    assert "crossvit_mtl.models" in modules and "crossvit_mtl.inference" in modules
    assert not {m for m in modules if m.split(".")[0] in ("lightning", "pytorch_lightning")}


@pytest.mark.heavy
def test_plots_leave_matplotlib_backend_alone(tmp_path):
    code = (f"import matplotlib\nfrom crossvit_mtl.viz import plots\n"
            f"plots.plot_confusion([[3, 1], [0, 2]], ['a', 'b'], {str(tmp_path / 'c.png')!r})\n"
            f"print(matplotlib.get_backend())")
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["svg"]
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
