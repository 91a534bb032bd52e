"""The direct (analog current) encoder: hand-computed values, validation, training with it, and the
clear refusals where spike input is required (device compiler, Brian2 reference)."""

import numpy as np
import pytest
import torch

import encoders as E
from snn.encoding import encode_batch, require_spike_input
from snn.model import build_model
from snn.presets import conv, fc


def test_direct_repeats_scaled_intensities_every_step():
    x = torch.tensor([[0.0, 0.25, 1.0]])
    out = E.encode("direct", x, 3, gain=2.0)
    assert out.shape == (3, 1, 3)
    assert out.tolist() == [[[0.0, 0.5, 2.0]]] * 3
    # a dense copy: writing to one step must not change another
    out[0, 0, 0] = 7.0
    assert out[1, 0, 0] == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_direct_keeps_dtype_and_ignores_generator(dtype):
    x = torch.tensor([[0.5, 0.75]], dtype=dtype)
    a = E.encode("direct", x, 4, generator=1)
    b = E.encode("direct", x, 4, generator=2)
    assert a.dtype == dtype and torch.equal(a, b)
    assert torch.equal(E.direct(np.array([[0.5, 0.75]], dtype=np.float32), 2), torch.tensor([[[0.5, 0.75]]] * 2))


@pytest.mark.parametrize("x,num_steps,gain,msg", [
    (torch.tensor([[1.5]]), 2, 1.0, r"x must lie in \[0.0, 1.0\]"),
    (torch.tensor([[float("nan")]]), 2, 1.0, "NaN|finite"),
    (torch.tensor([[1]]), 2, 1.0, "floating dtype"),
    (torch.tensor([[0.5]]), 0, 1.0, "num_steps"),
    (torch.tensor([[0.5]]), 2, float("inf"), "gain"),
])
def test_direct_rejects_bad_input(x, num_steps, gain, msg):
    with pytest.raises(ValueError, match=msg):
        E.direct(x, num_steps, gain=gain)


def test_registry_knows_which_encoders_emit_spikes():
    assert not E.is_spike_encoder("direct")
    assert all(E.is_spike_encoder(n) for n in ("rate", "poisson", "latency", "delta"))
    with pytest.raises(ValueError, match="encoder name"):
        E.is_spike_encoder("nope")


def test_model_spec_with_direct_encoder_feeds_currents_to_the_first_layer():
    spec = fc((4,), 2, hidden=3, num_steps=5, encoder={"type": "direct"})
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    assert torch.equal(encode_batch(spec, x, None), x.expand(5, 1, 4))


def test_compiler_refuses_an_analog_input_model_and_brian2_runs_it():
    """Spike-only profiles refuse a direct-input model by name (mcu takes it as graded int8 input,
    tests/test_compile_conv.py). The Brian2 reference feeds the currents as a TimedArray and agrees
    spike for spike (docs/brian2_mapping.md)."""
    from hw.compiler import compile_model
    from snn.brian2_ref import crosscheck

    spec = fc((4,), 2, hidden=3, num_steps=5, encoder={"type": "direct"})
    torch.manual_seed(0)
    sd = {k: (v * 4 if k.endswith("weight") else v) for k, v in build_model(spec).state_dict().items()}
    with pytest.raises(ValueError, match="analog encoder 'direct'.*profile 'loihi' takes spike input only"):
        compile_model(spec, sd, "loihi")
    assert compile_model(spec, sd, "mcu").graded_input
    x = torch.rand(5, 2, 4, generator=torch.Generator().manual_seed(1))
    d = crosscheck((spec, sd), x).to_dict(per_neuron=False)
    assert d["spike_agreement"] == 1.0 and d["exact"], d
    require_spike_input(fc((4,), 2, hidden=3), "anything")  # rate: accepted


def test_train_cli_direct_encoder_on_digits(tmp_path, capsys):
    """A direct-input fc preset learns the digits (far above the 10 % chance level in 3 epochs)."""
    import json

    from experiments.cli import main

    main(["train", "--dataset", "digits", "--model", "fc", "--hidden", "64", "--encoder", "direct",
          "--num-steps", "5", "--epochs", "3", "--lr", "5e-3", "--max-train", "1000", "--max-test", "200", "--no-progress",
          "--json", "--out", str(tmp_path)])
    res = json.loads(capsys.readouterr().out)
    assert res["test_accuracy"] > 0.85
    from snn.checkpoint import load_checkpoint
    assert load_checkpoint(res["checkpoint"]).spec.encoder == {"type": "direct"}


def test_train_cli_encoder_flag_is_for_presets_only(tmp_path, capsys):
    from experiments.cli import main

    spec = tmp_path / "s.json"
    spec.write_text(fc((64,), 10, hidden=8, num_steps=3).to_json())
    rc = main(["train", "--model", str(spec), "--encoder", "direct", "--epochs", "1", "--no-progress",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--encoder applies to the presets" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
