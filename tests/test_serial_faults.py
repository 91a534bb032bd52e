"""Fault injection on the serial link: bytes corrupted, dropped, duplicated and delayed at set rates
in both directions. Every run must either give exactly the clean run's results or raise a clear
`SerialLinkError` — never a silently wrong result."""

from __future__ import annotations

import shutil

import pytest
import torch

from hw.compiler import compile_model
from hw.device import open_device
from hw.emulator import EmulatorDevice
from hw.serial import FaultyTransport, SerialLinkError
from snn.model import build_model
from snn.spec import Leaky, Linear, ModelSpec, Synaptic

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                reason="needs the host firmware (make and a C compiler)")


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(1)
    spec = ModelSpec(layers=(Linear(40, 24), Synaptic(alpha=0.7, beta=0.85, threshold=0.6),
                             Linear(24, 10), Leaky(beta=0.8, threshold=0.5)), input_shape=(40,), num_steps=12)
    sd = {k: v * 3 if k.endswith("weight") else v for k, v in build_model(spec).state_dict().items()}
    prog = compile_model(spec, sd, "mcu")
    x = (torch.rand(12, 24, 40, generator=torch.Generator().manual_seed(2)) < 0.3).to(torch.uint8)
    with open_device("emulator") as dev:
        dev.load(prog)
        clean = dev.run(x)
    assert 0 < int(clean.output_spikes.sum())
    return prog, x, clean


def _faulty_run(prog, x, seed, retries=12, probe=False, **rates):
    injected = {}

    def wrap(t):
        f = FaultyTransport(t, seed=seed, **rates)
        injected["t"] = f
        return f

    dev = EmulatorDevice(transport_wrapper=wrap, timeout_s=0.15, retries=retries, frame_payload=256,
                         membrane_layer=0)
    try:
        dev.open()
        dev.load(prog)
        res = dev.run(x, probe=probe)
        return res, None, injected["t"].injected, dev.link_stats()
    except SerialLinkError as e:
        return None, e, injected["t"].injected, None
    finally:
        dev.close()
        assert dev.exit_code == 0


FAULTS = {
    "corrupt": {"corrupt_rate": 8e-4},
    "drop": {"drop_rate": 8e-4},
    "duplicate": {"duplicate_rate": 8e-4},
    "delay": {"delay_rate": 0.15, "delay_s": 0.2},   # longer than the 0.15 s timeout: late answers
    "mixed": {"corrupt_rate": 3e-4, "drop_rate": 3e-4, "duplicate_rate": 3e-4, "delay_rate": 0.02,
              "delay_s": 0.03},
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_faulty_line_gives_clean_results_or_a_clear_error(case, kind):
    prog, x, clean = case
    completed = 0
    for seed in range(3):
        res, err, injected, stats = _faulty_run(prog, x, seed, **FAULTS[kind])
        assert sum(injected.values()) > 0, "no fault was injected: the test would prove nothing"
        if err is not None:
            assert str(err)  # a clear message, e.g. "no valid answer to RUN from ... after 13 tries"
            continue
        completed += 1
        assert torch.equal(res.output_spikes, clean.output_spikes)
        assert res.counters == clean.counters
        if kind != "delay":
            assert stats["retransmissions"] + stats["bad_frames"] + stats["stale_frames"] > 0
    assert completed >= 2   # at these rates retries recover; a link that always failed would be a bug


def test_faulty_line_with_recording_gives_clean_records_or_a_clear_error(case):
    """Recording on (protocol v2: OUTPUT with a first chunk, then READ/RECORD chunks) over a line
    with every kind of fault: each completed run's layer spikes and membranes equal the clean
    run's, bit for bit."""
    prog, x, _ = case
    x = x[:, :8]   # 96 steps: ~10 kB of recording, a few faults per run, a few seconds per test
    with open_device("emulator", membrane_layer=0) as dev:
        dev.load(prog)
        clean = dev.run(x, probe=True)
    assert int(clean.layer_spikes[0].sum()) > 0
    completed = 0
    for seed in range(3):
        res, err, injected, stats = _faulty_run(prog, x, seed, probe=True, **FAULTS["mixed"])
        assert sum(injected.values()) > 0
        if err is not None:
            assert str(err)
            continue
        completed += 1
        assert torch.equal(res.output_spikes, clean.output_spikes) and res.counters == clean.counters
        assert all(torch.equal(res.layer_spikes[k], clean.layer_spikes[k]) for k in clean.layer_spikes)
        assert torch.equal(res.membranes[0], clean.membranes[0])
        assert stats["retransmissions"] + stats["bad_frames"] + stats["stale_frames"] > 0
    assert completed >= 2


def test_heavy_corruption_never_yields_a_wrong_result(case):
    """Rates at which most frames are damaged and few retries: runs fail loudly, never wrongly."""
    prog, x, clean = case
    outcomes = []
    for seed in range(3):
        res, err, injected, _ = _faulty_run(prog, x, seed, retries=2, corrupt_rate=3e-3, drop_rate=1e-3)
        assert injected["corrupted"] > 0
        if res is not None:
            assert torch.equal(res.output_spikes, clean.output_spikes)
        outcomes.append("ok" if res is not None else type(err).__name__)
    assert any(o != "ok" for o in outcomes), outcomes


def test_faulty_transport_is_deterministic_and_validates_rates():
    class Sink:
        name = "sink"

        def __init__(self):
            self.data = b""

        def write(self, d):
            self.data += d

    a, b = Sink(), Sink()
    for s in (a, b):
        FaultyTransport(s, corrupt_rate=0.1, drop_rate=0.1, duplicate_rate=0.1, seed=5).write(bytes(range(200)))
    assert a.data == b.data and a.data != bytes(range(200))
    with pytest.raises(ValueError, match="drop_rate"):
        FaultyTransport(Sink(), drop_rate=1.5)
