"""The example spec files shipped for the README tutorial load, validate and run."""

from pathlib import Path

import pytest
import torch

from snn.model import build_model
from snn.spec import ModelSpec, load_spec

SPECS = sorted((Path(__file__).parent.parent / "experiments" / "specs").glob("*.*"))


def test_examples_exist():
    assert {p.suffix for p in SPECS} == {".json", ".toml"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_example_spec_builds_and_runs(path):
    spec = load_spec(path)
    assert ModelSpec.from_json(spec.to_json()) == spec
    out = build_model(spec)(torch.zeros(spec.num_steps, 2, *spec.input_shape))
    assert out.spikes.shape == (spec.num_steps, 2, 10)
