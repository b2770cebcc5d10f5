"""`python -m crossvit_mtl` is the `crossvit-mtl` command (DDP launchers re-run it per rank)."""
import sys

from crossvit_mtl.cli import main

sys.exit(main())
