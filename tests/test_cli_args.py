"""Command-line arguments: every numeric option of every sub-command has a range from
`experiments.args.RANGES` and out-of-range values are refused before the command runs; `--device`
names what is available; missing packages are clear errors, never tracebacks."""

from __future__ import annotations

import argparse
import sys

import pytest
import torch

from experiments import args as cli_args
from experiments.args import RANGES, Range, add_number, bound_numbers, check_torch_device
from experiments.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _numeric(action: argparse.Action) -> bool:
    """Takes numbers: a numeric type or a numeric default (an option added without type=)."""
    if action.type in (int, float) or hasattr(action.type, "range"):
        return True
    default = action.default
    return isinstance(default, (int, float)) and not isinstance(default, bool) and action.nargs != 0


def test_every_numeric_option_of_every_command_has_a_range_from_the_table():
    commands = _subparsers(build_parser())
    assert {"train", "eval", "deploy", "export", "crosscheck", "devices", "run", "continual"} <= set(commands)
    checked = 0
    for name, p in commands.items():
        for action in p._actions:
            if not _numeric(action):
                continue
            option = max(action.option_strings, key=len)
            assert action.type not in (int, float), f"spikeloop {name} {option}: plain type={action.type.__name__}"
            assert getattr(action.type, "range", None) is RANGES[option], f"spikeloop {name} {option}"
            if action.default is not None:  # the default itself must be allowed
                assert RANGES[option].contains(action.default), f"spikeloop {name} {option} default"
            checked += 1
    assert checked >= 40  # 8 commands; train alone has 10


def test_an_option_without_a_range_fails_when_the_parser_is_built():
    p = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="--frobs has no range in experiments.args.RANGES"):
        add_number(p, "--frobs", default=1)
    p.add_argument("--wobbles", type=int, default=2)
    with pytest.raises(ValueError, match="--wobbles has no range"):
        bound_numbers(p)
    q = argparse.ArgumentParser()
    q.add_argument("--lr", type=int)
    with pytest.raises(ValueError, match="--lr is declared int, RANGES says float"):
        bound_numbers(q)


@pytest.mark.parametrize("argv, message", [
    (["train", "--num-steps", "0"], "argument --num-steps: must be an integer in [1, 100000], got 0"),
    (["train", "--hidden", "0"], "argument --hidden: must be an integer in [1, 1000000], got 0"),
    (["train", "--max-train", "0"], "argument --max-train: must be an integer in [1, 1000000000], got 0"),
    (["train", "--max-test", "-5"], "argument --max-test: must be an integer in [1, 1000000000], got -5"),
    (["train", "--epochs", "abc"], "argument --epochs: must be an integer in [1, 100000], got 'abc'"),
    (["train", "--epochs", "2.5"], "argument --epochs: must be an integer in [1, 100000], got '2.5'"),
    (["train", "--lr", "0"], "argument --lr: must be a number in (0, 10], got 0"),
    (["train", "--lr", "nan"], "argument --lr: must be a number in (0, 10], got nan"),
    (["train", "--val-fraction", "1"], "argument --val-fraction: must be a number in [0, 1), got 1"),
    (["train", "--patience", "0"], "argument --patience: must be an integer in [1, 100000], got 0"),
    (["train", "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295], got -1"),
    (["eval", "ck.safetensors", "--max-test", "0"],
     "argument --max-test: must be an integer in [1, 1000000000], got 0"),
    (["deploy", "ck.safetensors", "--batch-size", "0"],
     "argument --batch-size: must be an integer in [1, 1000000], got 0"),
    (["export", "ck.safetensors", "--out", "x", "--max-spikes", "16"],
     "argument --max-spikes: must be an integer in [1, 15], got 16"),
    (["crosscheck", "ck.safetensors", "--samples", "0"],
     "argument --samples: must be an integer in [1, 100000], got 0"),
    (["devices", "--timeout-s", "0"], "argument --timeout-s: must be a number in (0, 3600], got 0"),
    (["devices", "--baud", "0"], "argument --baud: must be an integer in [50, 20000000], got 0"),
    (["run", "--num-steps", "0"], "argument --num-steps: must be an integer in [1, 100000], got 0"),
    (["run", "--crosscheck-samples", "0"], "argument --crosscheck-samples: must be an integer in [1, 100000], got 0"),
    (["continual", "--tasks", "0"], "argument --tasks: must be an integer in [1, 1000], got 0"),
    (["continual", "--hidden", "8", "0"], "argument --hidden: must be an integer in [1, 1000000], got 0"),
    (["continual", "--gpm-threshold", "0.9", "1.5"], "argument --gpm-threshold: must be a number in (0, 1], got 1.5"),
    (["continual", "--threads", "0"], "argument --threads: must be an integer in [1, 4096], got 0"),
])
def test_out_of_range_values_are_refused_before_the_command_runs(argv, message, capsys):
    # SystemExit from argparse: the command's function never ran (it would have returned a status)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"spikeloop {argv[0]}: error: {message}\n" in err
    assert "Traceback" not in err


def test_values_at_the_ends_of_a_range_are_accepted():
    p = _subparsers(build_parser())["train"]
    a = p.parse_args(["--num-steps", "1", "--hidden", "1000000", "--val-fraction", "0", "--lr", "10",
                      "--max-train", "1", "--max-test", "1000000000", "--seed", "4294967295"])
    assert (a.num_steps, a.hidden, a.val_fraction, a.lr, a.max_train, a.max_test, a.seed) == \
        (1, 1_000_000, 0.0, 10.0, 1, 10**9, 2**32 - 1)
    assert isinstance(a.lr, float) and isinstance(a.num_steps, int)
    c = _subparsers(build_parser())["continual"].parse_args(["--tasks", "1", "--gpm-threshold", "1", "0.5"])
    assert c.tasks == 1 and c.gpm_threshold == [1.0, 0.5]


def test_range_describe_and_contains():
    r = Range(float, 0.0, 1.0, hi_open=True)
    assert r.describe() == "a number in [0, 1)"
    assert r.contains(0.0) and not r.contains(1.0) and not r.contains(-1e-9)
    with pytest.raises(ValueError, match="lo must be <= Range.hi"):
        Range(int, 2, 1)
    with pytest.raises(ValueError, match="closed bounds"):
        Range(int, 0, 1, lo_open=True)


def test_zero_counts_are_not_ignored_by_the_library_either(digits):
    """load_data / make_spec with 0 (from code, bypassing argparse) fail instead of meaning 'all'."""
    from experiments.commands.train import load_data, make_spec

    ns = argparse.Namespace(dataset="digits", data_dir=None, download=False, max_train=0, max_test=None)
    with pytest.raises(ValueError, match="max_train must be an int >= 1, got 0"):
        load_data(ns)
    ns = argparse.Namespace(dataset="digits", data_dir=None, download=False, max_train=None, max_test=0)
    with pytest.raises(ValueError, match="max_test must be an int >= 1, got 0"):
        load_data(ns)
    spec_args = dict(model="fc", num_steps=None, hidden=None, encoder=None)
    with pytest.raises(ValueError, match="num_steps must be a positive integer, got 0"):
        make_spec(argparse.Namespace(**spec_args | {"num_steps": 0}), digits)
    with pytest.raises(ValueError, match="out_features must be a positive integer, got 0"):
        make_spec(argparse.Namespace(**spec_args | {"hidden": 0}), digits)


def test_preset_options_that_do_not_apply_are_refused(tmp_path, capsys):
    from snn.presets import fc

    base = ["train", "--dataset", "digits", "--max-train", "50", "--max-test", "10", "--epochs", "1",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(base + ["--model", "conv", "--hidden", "8"]) == 2
    assert "spikeloop train: error: --hidden applies to the fc preset, not to 'conv'" in capsys.readouterr().err
    path = tmp_path / "spec.json"
    path.write_text(fc((64,), 10, hidden=8, num_steps=4).to_json())
    assert main(base + ["--model", str(path), "--num-steps", "9", "--hidden", "3"]) == 2
    assert (f"spikeloop train: error: --num-steps, --hidden apply to the presets (fc, conv); the spec file "
            f"{path} sets its own") in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.safetensors").exists()  # refused before any training


# ----------------------------------------------------------------------------- --device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("command", ["train", "continual"])
def test_cuda_device_without_cuda_is_a_clear_error(no_gpu, command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--device", "cuda", "--epochs", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"spikeloop {command}: error: argument --device: 'cuda' is not available: " in err
    assert err.rstrip().endswith("available here: cpu") and "Traceback" not in err


def test_device_names_and_indices_are_checked(two_gpus):
    assert check_torch_device("cpu") == "cpu"
    assert check_torch_device("cuda") == "cuda" and check_torch_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError) as info:
        check_torch_device("cuda:2")
    assert str(info.value) == ("'cuda:2' is not available: this machine has 2 CUDA device(s), cuda:0 .. cuda:1; "
                               "available here: cpu, cuda, cuda:0, cuda:1")
    with pytest.raises(ValueError, match=r"^'mps' is not available \(no Apple Metal GPU\); available here: cpu, cuda"):
        check_torch_device("mps")
    with pytest.raises(ValueError, match=r"^'tpu' is not a device; use cpu, cuda, cuda:N or mps \(available here"):
        check_torch_device("tpu")
    assert cli_args.available_torch_devices() == ["cpu", "cuda", "cuda:0", "cuda:1"]


# ----------------------------------------------------------------------------- missing packages


def test_download_without_torchvision_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    rc = main(["train", "--dataset", "mnist", "--download", "--data-dir", str(tmp_path / "mnist"), "--epochs", "1",
               "--no-progress", "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("spikeloop train: error: mnist: download=True needs torchvision, which is not installed.")
    assert "--data-dir" in err and "train-images-idx3-ubyte" in err and "Traceback" not in err


def test_a_missing_module_is_a_clear_error(monkeypatch, capsys):
    import experiments.commands.devices as devices_cmd

    def needs_serial(args):
        raise ModuleNotFoundError("No module named 'serial'", name="serial")

    monkeypatch.setattr(devices_cmd, "run", needs_serial)
    assert main(["devices"]) == 2
    assert capsys.readouterr().err == ("spikeloop devices: error: No module named 'serial': this command needs "
                                       "the Python package 'serial', which is not installed\n")


def test_plot_sample_outside_the_samples_is_refused_before_simulating(tmp_path, capsys):
    # the checkpoint does not exist: the check comes before it is even read
    assert main(["crosscheck", str(tmp_path / "none.safetensors"), "--samples", "3", "--plot-sample", "3"]) == 2
    assert ("spikeloop crosscheck: error: --plot-sample 3 is not one of the 3 simulated samples (0 .. 2)"
            in capsys.readouterr().err)
