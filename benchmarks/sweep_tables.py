"""The tables of a finished sweep, as docs/multi-task.md shows them: its screen (val, screening seeds)
and its test comparison (test seeds), each as `crossvit-mtl compare` prints it, with the compare
commands that print them again.

    python benchmarks/sweep_tables.py configs/sweep_synth.yaml                          # to the screen
    python benchmarks/sweep_tables.py configs/sweep_synth.yaml --docs docs/multi-task.md  # into the page

With ``--docs`` the text between the page's two markers (``<!-- sweep tables ... -->`` and
``<!-- end of sweep tables -->``) is replaced and nothing else; a page without them is refused.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from crossvit_mtl.cli.args import UserError
from crossvit_mtl.cli.sweep import comparisons
from crossvit_mtl.comparison import BOOTSTRAP, report_markdown

BEGIN = "<!-- sweep tables"
END = "<!-- end of sweep tables -->"


def command(sweep_dir: Path, comparison) -> str:
    """The `crossvit-mtl compare` line that prints ``comparison`` again."""
    runs = " ".join(str(sweep_dir / g.name) for g in comparison.runs)
    baselines = " ".join(str(sweep_dir / g.name) for g in comparison.baselines)
    seeds = sorted({s.removeprefix("seed") for g in comparison.groups for s in g.seeds}, key=int)
    split = " --split val" if comparison.split == "val" else ""
    return f"crossvit-mtl compare {runs} --baselines {baselines}{split} --seeds {' '.join(seeds)}"


def tables(config: str, bootstrap: int = BOOTSTRAP) -> str:
    sweep_dir, found = comparisons(config, bootstrap=bootstrap)
    parts = []
    for _, title, comparison in found:
        parts += [f"**{title}** (`{command(sweep_dir, comparison)}`):", report_markdown(comparison)]
    return "\n\n".join(parts)


def replace_region(page: Path, text: str) -> None:
    content = page.read_text()
    pattern = re.compile(rf"({re.escape(BEGIN)}[^\n]*-->\n).*?(\n{re.escape(END)})", re.S)
    if not pattern.search(content):
        raise UserError(f"--docs {page}: no `{BEGIN} ... -->` and `{END}` markers to write between")
    page.write_text(pattern.sub(lambda m: f"{m.group(1)}\n{text}\n{m.group(2)}", content, count=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the sweep's YAML (its sweep_dir holds the finished runs)")
    parser.add_argument("--docs", type=Path, help="write the tables between the markers of this page")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help="resamples of the test samples")
    args = parser.parse_args()
    try:
        text = tables(args.config, args.bootstrap)
        if args.docs:
            replace_region(args.docs, text)
            print(f"wrote the sweep tables of {args.config} into {args.docs}")
        else:
            print(text)
    except UserError as err:
        print(f"sweep_tables: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
