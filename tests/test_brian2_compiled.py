"""Brian2's compiled targets (cython in-process, cpp_standalone in a subprocess) on one small network.

Marked `brian2_compiled` (needs gcc). The first run compiles (about a minute on one free core, more
on a loaded machine); compiled code is cached under `snn.brian2_ref.cache_root()`
($SPIKELOOP_BRIAN2_CACHE, else ~/.cache/spikeloop/brian2), so later runs only load it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn.brian2_ref import cache_root, crosscheck, run_brian2, translate
from snn.brian2_ref.runner import STRICT_FP_FLAGS, _structure_key, check_inputs
from snn.model import build_model
from snn.spec import Conv2d, Flatten, Leaky, Linear, MaxPool2d, ModelSpec, RLeaky, Synaptic

pytestmark = pytest.mark.brian2_compiled


def _network():
    """Synaptic (zero reset) -> RLeaky all-to-all (subtract); weights on the 2^-8 grid."""
    spec = ModelSpec(layers=(Linear(12, 10), Synaptic(alpha=0.75, beta=0.875, threshold=0.5, reset="zero"),
                             Linear(10, 6), RLeaky(beta=0.9, threshold=0.625)),
                     input_shape=(12,), num_steps=20, name="compiled-test")
    g = torch.Generator().manual_seed(11)
    sd = build_model(spec).state_dict()
    for k, v in sd.items():
        if k.endswith(("weight", "bias")):
            s = 24 if "recurrent" in k else 96
            sd[k] = torch.randint(-s // 2, s + 1, v.shape, generator=g).float() / 256
    x = (torch.rand(20, 2, 12, generator=g) < 0.4).float()
    return spec, sd, x


def _assert_exact(report):
    d = report.to_dict()
    assert d["spike_agreement"] == 1.0 and d["first_divergence_step"] is None, d
    assert d["max_membrane_abs_diff"] == 0.0
    assert all(0 < l["spikes_brian2"] < 40 * l["neurons"] for l in d["layers"])


def test_cython_target_bit_exact_and_prefs_restored():
    from brian2 import prefs

    before = (prefs["codegen.target"], list(prefs["codegen.cpp.extra_compile_args_gcc"]))
    spec, sd, x = _network()
    report = crosscheck((spec, sd), x, target="cython")
    assert report.target == "cython"
    _assert_exact(report)
    assert (prefs["codegen.target"], list(prefs["codegen.cpp.extra_compile_args_gcc"])) == before
    assert "-ffast-math" not in STRICT_FP_FLAGS and "-ffp-contract=off" in STRICT_FP_FLAGS
    assert any((cache_root() / "cython").iterdir())


def test_cpp_standalone_subprocess_bit_exact_and_project_cached():
    import brian2

    spec, sd, x = _network()
    report = crosscheck((spec, sd), x, target="cpp_standalone")
    _assert_exact(report)
    assert brian2.get_device().__class__.__name__ == "RuntimeDevice"  # the parent process is untouched
    plan = translate(spec, sd)
    project = cache_root() / "cpp_standalone" / _structure_key(plan, check_inputs(plan, x.numpy()))
    binary = project / "main"
    assert binary.exists()
    mtime = binary.stat().st_mtime_ns
    # Same structure, new weights and input: the cached project is reused, the binary not rebuilt.
    sd2 = dict(sd)
    sd2["layers.0.weight"] = sd["layers.0.weight"].flip(0)
    x2 = x.flip(0)
    again = run_brian2(translate(spec, sd2), x2.numpy(), target="cpp_standalone")
    ref = run_brian2(translate(spec, sd2), x2.numpy(), target="numpy")
    for i in ref.layers:
        np.testing.assert_array_equal(again.layers[i]["spikes"], ref.layers[i]["spikes"])
        np.testing.assert_array_equal(again.layers[i]["mem"], ref.layers[i]["mem"])
    assert binary.stat().st_mtime_ns == mtime


def test_cpp_standalone_conv_maxpool_analog_input_bit_exact():
    """Analog input (TimedArray), max pooling of values (linked variables, clip) and of spikes (the
    OR group), summed synapses: the same numbers in generated C++ as in snnTorch float64."""
    spec = ModelSpec(layers=(Conv2d(1, 3, 3, padding=1), Leaky(beta=0.875, threshold=0.5), MaxPool2d(2),
                             Conv2d(3, 4, 3, padding=1), MaxPool2d(2), Leaky(), Flatten(), Linear(4 * 2 * 2, 5),
                             Leaky()),
                     input_shape=(1, 8, 8), num_steps=10, encoder={"type": "direct", "gain": 1.0},
                     name="compiled-conv-test")
    g = torch.Generator().manual_seed(12)
    sd = build_model(spec).state_dict()
    for k, v in sd.items():
        if k.endswith(("weight", "bias")):
            sd[k] = torch.randint(-48, 97, v.shape, generator=g).float() / 256
    x = (torch.randint(0, 17, (2, 1, 8, 8), generator=g).float() / 16).expand(10, -1, -1, -1, -1).contiguous()
    assert [[s.kind for s in l.stages] for l in translate(spec, sd).layers] == [[], ["or", "linear", "max"], []]
    d = crosscheck((spec, sd), x, target="cpp_standalone").to_dict()
    assert d["spike_agreement"] == 1.0 and d["max_membrane_abs_diff"] == 0.0, d["layers"]
    assert all(0 < l["spikes_brian2"] < 20 * l["neurons"] for l in d["layers"])
