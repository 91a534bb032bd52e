"""Subspace math of HLOP and GPM: Oja's subspace rule against an eigen-decomposition of a known
covariance, the update formula against a numpy transcription of the paper's rule, exact orthogonal
projection, and the GPM memory against a hand-applied SVD criterion."""

import numpy as np
import pytest
import torch

from snn.continual.strategies import paper_subspace_size
from snn.continual.subspace import (HebbianSubspace, complement_projector, energy_captured, gpm_extend,
                                    oja_subspace_update, orthonormal_rows, project_out,
                                    random_orthonormal_rows, spike_quantizer)


def _synthetic(n=20, eigvals=(9.0, 6.0, 4.0, 2.5), noise=0.05, seed=0):
    """A covariance with known eigenvectors Q[:, :k] (eigenvalues eigvals) plus a small isotropic
    floor, and a sampler of zero-mean Gaussian batches [B, n] with that covariance."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.full(n, noise)
    lam[:len(eigvals)] = eigvals
    C = (Q * lam) @ Q.T
    L = np.linalg.cholesky(C)
    gen = torch.Generator().manual_seed(seed)

    def batch(B=512):
        z = torch.randn(B, n, generator=gen, dtype=torch.float64)
        return z @ torch.from_numpy(L).T

    return C, batch


def _top_eigvecs(C, k, skip=0):
    w, V = np.linalg.eigh(C)
    order = np.argsort(w)[::-1]
    return V[:, order[skip:skip + k]]


def _subspace_distance(H, U):
    """|| P_H - P_U ||_2 (sine of the largest principal angle) for row basis H [k, n], columns U [n, k]."""
    Qh = orthonormal_rows(torch.as_tensor(H)).numpy().T
    Pu = U @ U.T
    return np.linalg.norm(Qh @ Qh.T - Pu, 2)


def test_oja_converges_to_principal_subspace_of_known_covariance():
    C, batch = _synthetic()
    sub = HebbianSubspace(20, lr=0.01, iterations=5, momentum=0.9, dtype=torch.float64)
    sub.add_neurons(4, torch.Generator().manual_seed(1))
    start = _subspace_distance(sub.H, _top_eigvecs(C, 4))
    for _ in range(400):
        sub.update(batch())
    dist = _subspace_distance(sub.H, _top_eigvecs(C, 4))
    assert start > 0.5  # a random start is far from the answer, so convergence is shown
    assert dist < 0.06, dist
    # Oja's subspace rule also drives the rows to an orthonormal set
    assert torch.allclose(sub.H @ sub.H.T, torch.eye(4, dtype=torch.float64), atol=0.03)


def test_new_neurons_learn_the_residual_next_to_frozen_ones():
    C, batch = _synthetic(eigvals=(10.0, 8.0, 3.0, 2.0))  # clear gaps after the 2nd and 4th value
    sub = HebbianSubspace(20, lr=0.01, iterations=5, momentum=0.9, dtype=torch.float64)
    sub.add_neurons(2, torch.Generator().manual_seed(2))
    for _ in range(400):
        sub.update(batch())
    sub.freeze()
    frozen = sub.H.clone()
    sub.add_neurons(2, torch.Generator().manual_seed(3))
    for _ in range(400):
        sub.update(batch())
    assert torch.equal(sub.H[:2], frozen)  # frozen rows never move
    assert _subspace_distance(sub.H[:2], _top_eigvecs(C, 2)) < 0.06
    assert _subspace_distance(sub.H[2:], _top_eigvecs(C, 2, skip=2)) < 0.06


def _reference_rule(W, x, lr, fix, mom_buf, m=0.9, clip=10.0, spike=None):
    """The paper's update transcribed in numpy: y = x Wᵀ, xhat = y W, dW = yᵀ(x - xhat)/B clipped,
    rows in `fix` not updated and their momentum kept. spike=(scale, levels): y carried as spikes."""
    y = x @ W.T
    if spike is not None:
        scale, levels = spike
        y = np.round(np.clip(y, -scale, scale) / scale * levels) / levels * scale
    xhat = y @ W
    dW = np.clip(y.T @ (x - xhat) / x.shape[0], -clip, clip)
    dW[fix] = 0.0
    keep = mom_buf[fix].copy()
    mom_buf = mom_buf.copy()
    mom_buf[fix] = 0.0
    mom_buf = m * mom_buf + (1 - m) * dW
    W = W + lr * mom_buf
    mom_buf[fix] = keep
    return W, mom_buf


def test_update_matches_numpy_transcription_of_the_rule():
    rng = np.random.default_rng(5)
    n, mf, mn, B = 12, 3, 4, 16
    W = rng.standard_normal((mf + mn, n)) * 0.3
    mom = rng.standard_normal((mf + mn, n)) * 0.01
    xs = [rng.standard_normal((B, n)) for _ in range(3)]
    ref_W, ref_m = W.copy(), mom.copy()
    for x in xs:
        ref_W, ref_m = _reference_rule(ref_W, x, 0.05, list(range(mf)), ref_m)
    H_new, vel = torch.from_numpy(W[mf:].copy()), torch.from_numpy(mom[mf:].copy())
    for x in xs:
        H_new, vel = oja_subspace_update(torch.from_numpy(W[:mf]), H_new, torch.from_numpy(x), 0.05, 1,
                                         velocity=vel, momentum=0.9, clip=10.0)
    np.testing.assert_allclose(H_new.numpy(), ref_W[mf:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref_W[:mf], W[:mf])  # the reference leaves frozen rows alone too
    # several iterations on one batch = repeated single steps
    a, va = oja_subspace_update(torch.from_numpy(W[:mf]), torch.from_numpy(W[mf:]), torch.from_numpy(xs[0]),
                                0.05, 3, velocity=torch.from_numpy(mom[mf:]))
    b, vb = torch.from_numpy(W[mf:]), torch.from_numpy(mom[mf:])
    for _ in range(3):
        b, vb = oja_subspace_update(torch.from_numpy(W[:mf]), b, torch.from_numpy(xs[0]), 0.05, 1, velocity=vb)
    assert torch.allclose(a, b, atol=1e-13) and torch.allclose(va, vb, atol=1e-13)


def test_spiking_lateral_neurons_match_the_transcription():
    rng = np.random.default_rng(7)
    n, mf, mn, B = 10, 2, 3, 8
    W = rng.standard_normal((mf + mn, n))
    mom = np.zeros((mf + mn, n))
    x = rng.standard_normal((B, n)) * 2
    ref_W, _ = _reference_rule(W, x, 0.05, list(range(mf)), mom, spike=(2.0, 4.0))
    plain_W, _ = _reference_rule(W, x, 0.05, list(range(mf)), mom)
    new, _ = oja_subspace_update(torch.from_numpy(W[:mf]), torch.from_numpy(W[mf:]), torch.from_numpy(x), 0.05,
                                 velocity=torch.zeros(mn, n, dtype=torch.float64),
                                 quantize=spike_quantizer(2.0, 4.0))
    np.testing.assert_allclose(new.numpy(), ref_W[mf:], rtol=1e-12, atol=1e-12)
    assert np.abs(ref_W - plain_W).max() > 1e-3  # quantization matters at this coarseness


def test_update_clips_large_steps():
    H = torch.zeros(1, 2, dtype=torch.float64)
    H[0, 0] = 1.0
    x = torch.tensor([[100.0, 100.0]], dtype=torch.float64)  # y = 100, residual (0, 100): dH = (0, 1e4)
    new, _ = oja_subspace_update(H[:0], H, x, lr=1.0, velocity=None, clip=10.0)
    assert torch.equal(new, torch.tensor([[1.0, 10.0]], dtype=torch.float64))


def test_update_rejects_bad_shapes():
    with pytest.raises(ValueError, match="share n"):
        oja_subspace_update(torch.zeros(0, 3), torch.zeros(2, 3), torch.zeros(4, 5), 0.1)
    with pytest.raises(ValueError, match="iterations"):
        oja_subspace_update(torch.zeros(0, 3), torch.zeros(2, 3), torch.zeros(4, 3), 0.1, iterations=0)


def test_spike_quantizer_rounds_to_spike_counts():
    q = spike_quantizer(scale=20.0, levels=40.0)  # one spike = 0.5
    y = torch.tensor([0.26, -0.74, 7.1, 25.0, -30.0])
    assert torch.equal(q(y), torch.tensor([0.5, -0.5, 7.0, 20.0, -20.0]))
    with pytest.raises(ValueError):
        spike_quantizer(0.0, 10)


def test_projected_gradient_is_orthogonal_to_frozen_subspace():
    gen = torch.Generator().manual_seed(0)
    n, k = 50, 17
    H = torch.randn(k, n, generator=gen, dtype=torch.float64)  # not orthonormal: the basis fixes that
    basis = orthonormal_rows(H)
    G = torch.randn(30, n, generator=gen, dtype=torch.float64)
    Gp = project_out(G, basis)
    assert (Gp @ H.T).abs().max() < 1e-12 * G.abs().max() * H.abs().max() * n
    # the removed part lies in the subspace: projecting again changes nothing
    assert torch.allclose(project_out(Gp, basis), Gp, atol=1e-13)
    # the dense complement projector gives the same result
    big = orthonormal_rows(torch.randn(40, n, generator=gen, dtype=torch.float64))
    P = complement_projector(big)
    assert P is not None and complement_projector(basis) is None
    assert torch.allclose(project_out(G, big, P), project_out(G, big), atol=1e-12)


def test_hebbian_subspace_projection_after_freeze():
    sub = HebbianSubspace(30, lr=0.01, dtype=torch.float64)
    assert sub.add_neurons(5, torch.Generator().manual_seed(0)) == 5
    sub.H += 0.1 * torch.randn(5, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sub.freeze()
    G = torch.randn(8, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert (sub.project(G) @ sub.H.T).abs().max() < 1e-12
    # new neurons start orthogonal to the frozen subspace, and sizes are capped at n
    sub.add_neurons(100, torch.Generator().manual_seed(3))
    assert sub.size == 30
    assert (sub.H[5:] @ sub.basis.T).abs().max() < 1e-10


def test_random_orthonormal_rows():
    gen = torch.Generator().manual_seed(0)
    A = random_orthonormal_rows(6, 10, gen, dtype=torch.float64)
    assert torch.allclose(A @ A.T, torch.eye(6, dtype=torch.float64), atol=1e-12)
    B = random_orthonormal_rows(4, 10, gen, orthogonal_to=A, dtype=torch.float64)
    assert torch.allclose(B @ B.T, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert (B @ A.T).abs().max() < 1e-12
    with pytest.raises(ValueError):
        random_orthonormal_rows(5, 10, gen, orthogonal_to=A)


def test_gpm_first_task_follows_the_energy_criterion():
    # activations with singular values 4, 2, 1, 0.5 along known orthonormal directions
    rng = np.random.default_rng(0)
    n, N = 8, 20
    U, _ = np.linalg.qr(rng.standard_normal((n, 4)))
    V, _ = np.linalg.qr(rng.standard_normal((N, 4)))
    s = np.array([4.0, 2.0, 1.0, 0.5])
    A = (U * s) @ V.T  # [n, N], columns are samples
    energy = np.cumsum(s ** 2) / np.sum(s ** 2)  # 0.7619, 0.9524, 0.9962, 1.0
    acts = torch.from_numpy(A.T.copy())
    # the fewest top directions whose energy reaches the threshold (the paper's Eq. 5)
    for thr, r in ((0.75, 1), (0.9, 2), (0.96, 3), (0.999, 4), (0.5, 1)):
        basis = gpm_extend(None, acts, thr)
        assert basis.shape == (r, n), (thr, basis.shape, energy)
        if r:
            assert energy[r - 1] >= thr and (r == 1 or energy[r - 2] < thr)
            # the kept directions are the top-r singular vectors (up to sign)
            np.testing.assert_allclose(np.abs(basis.numpy() @ U[:, :r]), np.eye(r), atol=1e-10)


def test_gpm_later_task_adds_only_what_is_missing():
    gen = torch.Generator().manual_seed(1)
    n = 10
    E = torch.eye(n, dtype=torch.float64)
    old = E[:2]  # memory holds e0, e1
    # new activations: energy 9 along e0 (already held), 4 along e5, 1 along e6
    acts = torch.cat([3 * E[0:1], 2 * E[5:6], 1 * E[6:7]])
    acts = acts + 0 * torch.randn(3, n, generator=gen, dtype=torch.float64)
    basis = gpm_extend(old, acts, threshold=0.9)  # held 9/14 = 0.64 -> add e5 (13/14 = 0.93)
    assert basis.shape == (3, n)
    assert torch.allclose(basis[:2], old)
    assert torch.allclose(basis[2].abs(), E[5])
    assert gpm_extend(old, 3 * E[0:1], 0.9) is old  # nothing missing: unchanged
    assert energy_captured(basis, acts) == pytest.approx(13 / 14)
    with pytest.raises(ValueError, match="threshold"):
        gpm_extend(None, acts, 0.0)


def test_paper_schedule_sizes():
    # the reference code: 80 neurons on the first task, then 70, decreasing by 20 every 3 tasks
    assert [paper_subspace_size(784, "input", k) for k in range(10)] == [80, 70, 70, 50, 50, 50, 30, 30, 30, 10]
    assert [paper_subspace_size(800, "hidden", k) for k in range(4)] == [200, 70, 70, 50]
    assert [paper_subspace_size(800, "output", k) for k in (0, 1, 12)] == [100, 70, 0]
    assert paper_subspace_size(392, "input", 0) == 40


def test_hlop_size_scale_per_role_or_layer_name():
    from types import SimpleNamespace

    from experiments.continual.bench import parse_role_values
    from experiments.continual.schedules import mlp_spec
    from snn.continual.activity import weight_layers
    from snn.continual.strategies import HLOP
    from snn.model import build_model

    layers = weight_layers(build_model(mlp_spec(784, 10, hidden=(256,), num_steps=2)))
    hl = HLOP(size_scale={"output": 2.0})
    hl.ctx = SimpleNamespace(layers=layers)
    # 80 of 784 inputs (unscaled); 100/800 of 256 = 32, doubled
    assert [hl._size(layers[0], 0), hl._size(layers[1], 0)] == [80, 64]
    assert hl._size(layers[1], 1) == round(256 * 70 / 800 * 2)
    hl.size_scale = {"layers.0": 0.5, "output": 1.0}  # a layer name wins over defaults
    assert [hl._size(layers[0], 0), hl._size(layers[1], 0)] == [40, 32]
    assert parse_role_values("input=1,output=2", "--hlop-size-scale") == {"input": 1.0, "output": 2.0}
    with pytest.raises(ValueError, match="--hlop-size-scale must be a number"):
        parse_role_values("output=big", "--hlop-size-scale")
    with pytest.raises(ValueError, match="size_scale must be > 0"):
        HLOP(size_scale={"output": 0.0})


def test_schedules_build_valid_strategies_and_cli_overrides_them():
    from experiments.cli import build_parser
    from experiments.continual.bench import strategy_options
    from experiments.continual.schedules import SCHEDULES
    from snn.continual.strategies import make_strategy

    for sched in SCHEDULES.values():
        for name in ("hlop", "gpm", "ewc"):
            make_strategy(name, **getattr(sched, name))  # raises on a bad option
    args = build_parser().parse_args(["continual", "--hlop-size-scale", "output=3", "--hlop-lr", "0.05"])
    opts = strategy_options(args, SCHEDULES["cpu"])
    assert opts["hlop"]["size_scale"] == {"output": 3.0} and opts["hlop"]["lr"] == 0.05
    assert SCHEDULES["cpu"].hlop["size_scale"] == {"output": 2.0}  # the schedule itself is not changed
