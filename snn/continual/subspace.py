"""Subspace math for gradient-projection continual learning: Oja's subspace rule (HLOP), SVD memory (GPM).

Pure functions on tensors; `HebbianSubspace` is the thin state holder (lateral weights, momentum,
how many rows are frozen) that HLOP keeps per weight layer.

Shapes: a layer with n presynaptic inputs has lateral weights `H: [m, n]` (m subspace neurons,
one row each); activity batches are `x: [B, n]`; a weight gradient is `G: [out, n]` (conv2d
kernels flattened to `[C_out, C_in*k*k]`).
"""

from __future__ import annotations

import math

import torch


def oja_subspace_update(H_frozen: torch.Tensor, H_new: torch.Tensor, x: torch.Tensor, lr: float,
                        iterations: int = 1, *, velocity: torch.Tensor | None = None,
                        momentum: float = 0.9, clip: float = 10.0,
                        quantize=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`iterations` batch-averaged steps of the Hebbian/anti-Hebbian subspace rule on one batch.

    The lateral weights are H = [H_frozen; H_new] ([m_f + m, n]); only H_new learns:
        y = H x  (quantized by `quantize` when given: the spiking lateral neurons)
        dH_new = y_new (x - Hᵀ y)ᵀ, averaged over the batch, clipped to [-clip, clip]
        with momentum: v <- momentum v + (1 - momentum) dH_new;  H_new <- H_new + lr v
        without (velocity None): H_new <- H_new + lr dH_new
    The frozen rows (the merged subspace of earlier tasks) take part in y and in the reconstruction,
    so the new rows learn the residual; their part x - H_fᵀ y_f is the same in every iteration and
    is computed once (cost per iteration O(B·m·n)).

    H_frozen: [m_f, n] (m_f may be 0); H_new: [m, n]; x: [B, n]; velocity: [m, n] or None.
    Returns (new H_new, new velocity); the inputs are not modified.
    """
    if H_new.dim() != 2 or H_frozen.dim() != 2 or x.dim() != 2 or not (
            x.shape[1] == H_new.shape[1] == H_frozen.shape[1]):
        raise ValueError(f"oja_subspace_update: H_frozen [m_f, n], H_new [m, n] and x [B, n] must share n, "
                         f"got {tuple(H_frozen.shape)}, {tuple(H_new.shape)}, {tuple(x.shape)}")
    if iterations < 1:
        raise ValueError(f"oja_subspace_update: iterations must be >= 1, got {iterations}")
    if velocity is not None and velocity.shape != H_new.shape:
        raise ValueError(f"oja_subspace_update: velocity {tuple(velocity.shape)} != H_new {tuple(H_new.shape)}")
    if H_new.shape[0] == 0 or x.shape[0] == 0:
        return H_new, velocity
    q = quantize if quantize is not None else (lambda y: y)
    base = x if H_frozen.shape[0] == 0 else x - q(x @ H_frozen.t()) @ H_frozen
    for _ in range(iterations):
        y = q(x @ H_new.t())
        dH = (y.t() @ (base - y @ H_new) / x.shape[0]).clamp_(-clip, clip)
        if velocity is not None:
            velocity = momentum * velocity + (1.0 - momentum) * dH
            H_new = H_new + lr * velocity
        else:
            H_new = H_new + lr * dH
    return H_new, velocity


def spike_quantizer(scale: float, levels: float):
    """The spiking lateral neurons of the paper: y is clamped to [-scale, scale] and carried as a
    spike count over `levels` steps, i.e. rounded to multiples of scale / levels."""
    if not (scale > 0 and levels > 0):
        raise ValueError(f"spike_quantizer: scale and levels must be > 0, got {scale}, {levels}")

    def quantize(y: torch.Tensor) -> torch.Tensor:
        return torch.round(y.clamp(-scale, scale) / scale * levels) / levels * scale

    return quantize


def orthonormal_rows(H: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """An orthonormal basis [k, n] of the row space of H: [m, n] (k = numerical rank <= m).

    Used to turn learned lateral weights into an exact projector: a converged Oja subspace has
    H Hᵀ ≈ I already, this removes the remaining error."""
    if H.shape[0] == 0:
        return H.new_zeros(0, H.shape[1])
    U, S, Vh = torch.linalg.svd(H.to(torch.float64), full_matrices=False)
    keep = S > tol * max(S.max().item(), 1e-30)
    return Vh[keep].to(H.dtype)


def project_out(G: torch.Tensor, basis: torch.Tensor, projector: torch.Tensor | None = None) -> torch.Tensor:
    """Remove from every row of G: [out, n] its component in span(basis rows): G - (G Bᵀ) B.

    basis: [k, n] with orthonormal rows. projector: optional precomputed I - BᵀB [n, n] (cheaper
    than the two thin products when 2k > n); the result is the same."""
    if G.dim() != 2 or basis.dim() != 2 or G.shape[1] != basis.shape[1]:
        raise ValueError(f"project_out: G must be [out, n] and basis [k, n], got {tuple(G.shape)} "
                         f"and {tuple(basis.shape)}")
    if basis.shape[0] == 0:
        return G
    if projector is not None:
        return G @ projector
    return G - (G @ basis.t()) @ basis


def complement_projector(basis: torch.Tensor) -> torch.Tensor | None:
    """I - BᵀB [n, n] when it is cheaper to apply than the thin form (2k > n), else None."""
    k, n = basis.shape
    if 2 * k <= n:
        return None
    return torch.eye(n, dtype=basis.dtype, device=basis.device) - basis.t() @ basis


def random_orthonormal_rows(k: int, n: int, generator: torch.Generator, orthogonal_to: torch.Tensor | None = None,
                            dtype=torch.float32) -> torch.Tensor:
    """k random orthonormal rows [k, n], also orthogonal to the rows of `orthogonal_to` ([j, n],
    orthonormal) when given: the initial weights of new subspace neurons."""
    if k < 0 or (orthogonal_to is not None and orthogonal_to.shape[0] + k > n) or k > n:
        raise ValueError(f"cannot draw {k} orthonormal rows in {n} dimensions"
                         + (f" next to {orthogonal_to.shape[0]} existing ones" if orthogonal_to is not None else ""))
    if k == 0:
        return torch.zeros(0, n, dtype=dtype)
    A = torch.randn(n, k, generator=generator, dtype=torch.float64)
    if orthogonal_to is not None and orthogonal_to.shape[0]:
        B = orthogonal_to.to(torch.float64).cpu()
        A = A - B.t() @ (B @ A)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R)).where(torch.diagonal(R) != 0, torch.ones(())).unsqueeze(0)
    if orthogonal_to is not None and orthogonal_to.shape[0]:  # one more pass for numerical safety
        Q = Q - B.t() @ (B @ Q)
        Q, _ = torch.linalg.qr(Q)
    return Q.t().contiguous().to(dtype)


def gpm_extend(basis: torch.Tensor | None, activations: torch.Tensor, threshold: float) -> torch.Tensor:
    """Gradient Projection Memory update (Saha et al., ICLR 2021, Eq. 5-9).

    basis: [k, n] orthonormal rows kept from earlier tasks, or None before the first task.
    activations: [N, n] presynaptic activity of N samples of the task just learned.
    threshold: fraction of the activations' energy (sum of squared singular values) the memory must
    capture. First task: the fewest top singular vectors whose energy ratio reaches the threshold.
    Later: the energy already captured by `basis` counts, and new directions of the residual
    R = A - A BᵀB are added in order until the captured fraction reaches the threshold.
    Returns the new basis [k', n] (k' <= n), orthonormal rows.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"gpm_extend: threshold must be in (0, 1], got {threshold}")
    if activations.dim() != 2:
        raise ValueError(f"gpm_extend: activations must be [N, n], got {tuple(activations.shape)}")
    A = activations.to(torch.float64).t()  # [n, N]: columns are samples, as in the paper
    n = A.shape[0]
    if basis is not None and basis.shape[1] != n:
        raise ValueError(f"gpm_extend: basis has {basis.shape[1]} inputs, activations {n}")
    total = float((A * A).sum())
    if total == 0.0:
        return basis if basis is not None else A.new_zeros(0, n).to(activations.dtype)
    if basis is None or basis.shape[0] == 0:
        U, S, _ = torch.linalg.svd(A, full_matrices=False)
        ratio = torch.cumsum(S ** 2, 0) / total
        # the smallest r with ratio[r-1] >= threshold (the paper's Eq. 5; the reference code keeps one
        # direction fewer, r = #(ratio < threshold), which can never hold all of an exactly
        # low-rank activation matrix)
        r = min(int((ratio < threshold).sum()) + 1, int((S > 0).sum()))
        return U[:, :r].t().contiguous().to(activations.dtype)
    B = basis.to(torch.float64)
    R = A - B.t() @ (B @ A)
    U, S, _ = torch.linalg.svd(R, full_matrices=False)
    captured = (total - float((S ** 2).sum())) / total
    r = 0
    for s2 in (S ** 2).tolist():
        if captured >= threshold:
            break
        captured += s2 / total
        r += 1
    if r == 0:
        return basis
    new = torch.cat([B, U[:, :r].t()], 0)[:n]
    return new.contiguous().to(activations.dtype)


class HebbianSubspace:
    """The lateral subspace neurons of one layer (HLOP): weights H [m, n], momentum, frozen rows.

    `add_neurons(k)` appends k rows (random orthonormal, orthogonal to the frozen ones);
    `update(x)` runs the Hebbian iterations on a batch of presynaptic activity x: [B, n];
    `freeze()` merges every row into the frozen subspace and refreshes the projection basis.
    """

    def __init__(self, n: int, lr: float, iterations: int = 5, momentum: float | None = 0.9,
                 clip: float = 10.0, quantize=None, device="cpu", dtype=torch.float32):
        if n < 1:
            raise ValueError(f"HebbianSubspace: n must be >= 1, got {n}")
        if not lr > 0:
            raise ValueError(f"HebbianSubspace: lr must be > 0, got {lr}")
        if iterations < 1:
            raise ValueError(f"HebbianSubspace: iterations must be >= 1, got {iterations}")
        if momentum is not None and not 0.0 <= momentum < 1.0:
            raise ValueError(f"HebbianSubspace: momentum must be in [0, 1) or None, got {momentum}")
        self.n, self.lr, self.iterations, self.momentum = n, lr, iterations, momentum
        self.clip, self.quantize = clip, quantize
        self.H = torch.zeros(0, n, device=device, dtype=dtype)
        self.velocity = torch.zeros(0, n, device=device, dtype=dtype) if momentum is not None else None
        self.frozen = 0
        self.basis = torch.zeros(0, n, device=device, dtype=dtype)  # orthonormal rows of the frozen part
        self.projector = None

    @property
    def size(self) -> int:
        return self.H.shape[0]

    def add_neurons(self, k: int, generator: torch.Generator) -> int:
        """Append min(k, n - size) neurons; returns how many were added."""
        k = max(0, min(int(k), self.n - self.size))
        if k == 0:
            return 0
        new = random_orthonormal_rows(k, self.n, generator, self.basis.cpu(), dtype=self.H.dtype)
        self.H = torch.cat([self.H, new.to(self.H.device)], 0)
        if self.velocity is not None:
            self.velocity = torch.cat([self.velocity, torch.zeros_like(new, device=self.H.device)], 0)
        return k

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Hebbian iterations on x: [B, n] (rows of frozen neurons stay fixed)."""
        f = self.frozen
        if f >= self.size:
            return
        vel = self.velocity[f:] if self.velocity is not None else None
        new, vel = oja_subspace_update(self.H[:f], self.H[f:], x.to(self.H.dtype), self.lr, self.iterations,
                                       velocity=vel, momentum=self.momentum or 0.0, clip=self.clip,
                                       quantize=self.quantize)
        self.H[f:] = new
        if vel is not None:
            self.velocity[f:] = vel

    def freeze(self) -> None:
        """Merge all neurons into the frozen subspace (end of a task)."""
        self.frozen = self.size
        self.basis = orthonormal_rows(self.H)
        self.projector = complement_projector(self.basis)

    def project(self, G: torch.Tensor) -> torch.Tensor:
        """G: [out, n] with its component in the frozen subspace removed."""
        return project_out(G, self.basis, self.projector)

    def state(self) -> dict:
        return {"H": self.H.detach().cpu(), "frozen": self.frozen}


def energy_captured(basis: torch.Tensor, activations: torch.Tensor) -> float:
    """Fraction of the energy of activations [N, n] inside span(basis rows [k, n], orthonormal)."""
    total = float((activations.to(torch.float64) ** 2).sum())
    if total == 0.0 or basis.shape[0] == 0:
        return 0.0 if total else math.nan
    proj = activations.to(torch.float64) @ basis.to(torch.float64).t()
    return float((proj ** 2).sum()) / total
