"""Make app.py and the host bindings (bindings/, written by `medic build`)
importable natively; the tests replace the host functions they need."""

import pathlib
import sys

root = pathlib.Path(__file__).resolve().parent.parent
if not (root / "bindings" / "wit_world").is_dir():
    raise SystemExit("run `medic build` first: it writes the host bindings the tests import")
sys.path[:0] = [str(root / "bindings"), str(root)]
