"""Subprocess entry for Brian2's cpp_standalone target (its device is process-global state).

    python -m snn.brian2_ref.standalone IN.npz OUT.npz PROJECT_DIR CACHE_ROOT

IN.npz holds `inputs` ([T, B, n_input]: bool spikes or float64 currents) and a plan (`plan.plan_to_arrays`); OUT.npz gets
"<spec index>_<spikes|mem|syn>" arrays [T, B, N] and "timing" (JSON bytes). PROJECT_DIR is the
C++ project folder, reused between runs of the same network structure so `make` only rebuilds
what changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst, project, root = argv
    import brian2 as b2

    from .plan import plan_from_arrays
    from .runner import _simulate, brian2_prefs

    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    inputs = arrays.pop("inputs")
    plan = plan_from_arrays(arrays)
    with brian2_prefs("cpp_standalone", Path(root)):
        b2.set_device("cpp_standalone", directory=project, build_on_run=False)
        layers, timing = _simulate(plan, inputs, standalone_dir=Path(project))
    out = {f"{i}_{name}": a for i, rec in layers.items() for name, a in rec.items()}
    out["timing"] = np.frombuffer(json.dumps(timing).encode(), dtype=np.uint8)
    np.savez(dst, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
