"""The stochastic edge of stability: the noise-kernel norm 𝒦 of Agarwala & Pennington (2024) and the NTK spectrum.

Linear regression (their Fig. 1 model): L = (1/2n)‖Jθ − y‖², residual z = Jθ − y, NTK Θ = JJᵀ/n with eigenvalues
λ_α, and SGD θ ← θ − (η/b) J_Bᵀ z_B. The paper's own equations were not available to us; what follows is our
derivation for this model, tested against brute force (``tests/test_noise_kernel.py``) and Monte Carlo
(:func:`sgd_linear_regression`, the F7 notebook).

- The exact second moment M = E[zzᵀ] evolves as M′ = (I − ηΘ)M(I − ηΘ) + η²β[n·Θ diag(M) Θ − ΘMΘ]
  (:func:`second_moment_step`), β = (n − b)/(b(n − 1)) without replacement and 1/b with replacement (= γ_{n,b}/b).
- Dropping −ΘMΘ and taking delocalised eigenvectors, the diagonal p_α = (VᵀMV)_αα obeys p_{t+1} = (A + B)p_t with
  A = diag((1 − ηλ_α)²) and the rank-one B_αβ = η²β λ_α² (:func:`moment_matrices`).
- The loss obeys the renewal equation L_t = 1ᵀAᵗp₀ + Σ_{s<t} K(t−1−s) L_s with kernel
  K(τ) = η²β Σ_α λ_α² (1 − ηλ_α)^{2τ} (:func:`renewal_kernel`), and the **noise-kernel norm** is
  𝒦 = Σ_τ K(τ) = λmax[(I − A)⁻¹B] = βη Σ_α λ_α/(2 − ηλ_α) ≈ (βη/2) tr Θ.
- Perron–Frobenius: for ‖A‖ < 1, ρ(A + B) = 1 exactly when 𝒦 = 1, and SGD's mean square is stable iff
  ηλmax < 2 and 𝒦 < 1 (their Theorem 2.1). 𝒦 grows monotonically in η, so the stochastic edge η_c (𝒦 = 1,
  :func:`critical_lr`) comes before 2/λmax.

Networks (their Figs. 3–5): 𝒦 from the spectrum of the empirical NTK Θ = JJᵀ/n over examples × outputs
(:func:`ntk_eigenvalues`); with d outputs we use 𝒦 = (βη/d) Σ_α λ_α/(2 − ηλ_α) over the n·d eigenvalues, which is
exact for d independent copies of a regression (Θ then repeats each eigenvalue d times). The paper's estimator for
networks is not known to us: this is the natural choice.
"""

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from eoslab.curvature import gamma
from eoslab.operators import Params, ParamSpace


def _lams(ntk_eigenvalues: Tensor | np.ndarray) -> np.ndarray:
    lam = np.asarray(ntk_eigenvalues.detach().cpu() if isinstance(ntk_eigenvalues, Tensor) else ntk_eigenvalues)
    return lam.astype(np.float64).ravel()


def sgd_beta(n: int, batch_size: int, replace: bool = False) -> float:
    """β of the SGD noise: (n − b)/(b(n − 1)) without replacement, 1/b with replacement (γ_{n,b}/b)."""
    return gamma(n, batch_size, replace) / batch_size


def noise_kernel_norm(
    ntk_eigenvalues: Tensor | np.ndarray,
    lr: float | np.ndarray,
    batch_size: int,
    n: int,
    replace: bool = False,
    outputs: int = 1,
) -> float | np.ndarray:
    """𝒦 = (βη/d) Σ_α λ_α/(2 − ηλ_α) of Agarwala & Pennington (the "noise kernel norm"), λ_α the eigenvalues of
    Θ = JJᵀ/n (:func:`ntk_eigenvalues`; zeros may be left out), d = ``outputs``, β from :func:`sgd_beta`.

    ``lr`` may be an array (𝒦 for each η). 𝒦 = ∞ where ηλmax ≥ 2 (there GD itself diverges: ‖A‖ ≥ 1).
    """
    lam, eta = _lams(ntk_eigenvalues), np.asarray(lr, dtype=np.float64)
    x = eta[..., None] * lam
    with np.errstate(divide="ignore"):
        k = sgd_beta(n, batch_size, replace) * eta * (lam / (2 - x)).sum(-1) / outputs
    k = np.where((x >= 2).any(-1), np.inf, k)
    return float(k) if k.ndim == 0 else k


def renewal_kernel(
    ntk_eigenvalues: Tensor | np.ndarray, lr: float, batch_size: int, n: int, taus: np.ndarray, replace: bool = False
) -> np.ndarray:
    """K(τ) = η²β Σ_α λ_α²(1 − ηλ_α)^{2τ} for each τ in ``taus``: the renewal kernel whose sum is 𝒦."""
    lam = _lams(ntk_eigenvalues)
    decay = (1 - lr * lam) ** (2 * np.asarray(taus)[:, None])
    return lr**2 * sgd_beta(n, batch_size, replace) * (lam**2 * decay).sum(-1)


def moment_matrices(
    ntk_eigenvalues: Tensor | np.ndarray, lr: float, batch_size: int, n: int, replace: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of p_{t+1} = (A + B)p_t: A = diag((1 − ηλ_α)²), B_αβ = η²β λ_α² (rank one)."""
    lam = _lams(ntk_eigenvalues)
    A = np.diag((1 - lr * lam) ** 2)
    B = np.outer(lr**2 * sgd_beta(n, batch_size, replace) * lam**2, np.ones_like(lam))
    return A, B


def critical_lr(
    ntk_eigenvalues: Tensor | np.ndarray, batch_size: int, n: int, replace: bool = False, outputs: int = 1
) -> float:
    """η_c with 𝒦(η_c) = 1, the stochastic edge of stability (below 2/λmax; 𝒦 rises monotonically from 0 at η = 0
    to ∞ at 2/λmax, so Brent's method on that bracket finds the unique root to machine precision)."""
    from scipy.optimize import brentq  # imported here: ~0.3 s that the run jobs without 𝒦 need not pay

    lam = _lams(ntk_eigenvalues)
    edge = 2 / lam.max()
    return brentq(
        lambda eta: noise_kernel_norm(lam, eta, batch_size, n, replace, outputs) - 1,
        0.0,
        edge * (1 - 1e-15),
        xtol=1e-15,
        rtol=4 * np.finfo(float).eps,
    )


def second_moment_step(M: Tensor, ntk: Tensor, lr: float, batch_size: int, replace: bool = False) -> Tensor:
    """The exact map M ↦ E[z′z′ᵀ] of one SGD step on linear regression (module docstring), for M of shape
    (..., n, n) and Θ = ``ntk`` (n, n)."""
    n = ntk.shape[-1]
    beta = sgd_beta(n, batch_size, replace)
    G = torch.eye(n, dtype=ntk.dtype) - lr * ntk
    diag = torch.diag_embed(M.diagonal(dim1=-2, dim2=-1))
    return G @ M @ G + lr**2 * beta * (n * ntk @ diag @ ntk - ntk @ M @ ntk)


def mean_square_rate(ntk: Tensor, lr: float, batch_size: int, replace: bool = False) -> float:
    """Spectral radius of :func:`second_moment_step` (the exact mean-square growth rate per step), by ARPACK on the
    map acting on n×n matrices (its Perron eigenvector is a PSD matrix, so the radius is a real eigenvalue)."""
    from scipy.sparse.linalg import LinearOperator, eigs

    n = ntk.shape[-1]

    def matvec(v: np.ndarray) -> np.ndarray:
        M = torch.from_numpy(np.ascontiguousarray(v.real).reshape(n, n)).to(ntk.dtype)
        return second_moment_step(M, ntk, lr, batch_size, replace).reshape(-1).numpy()

    op = LinearOperator((n * n, n * n), matvec=matvec, dtype=np.float64)
    v0 = np.eye(n).reshape(-1)
    return float(np.abs(eigs(op, k=1, which="LM", v0=v0, tol=1e-12, return_eigenvectors=False)).max())


def mean_square_critical_lr(ntk: Tensor, batch_size: int, replace: bool = False) -> float:
    """The η at which the exact second-moment map (:func:`second_moment_step`) has spectral radius 1, i.e. where
    SGD on linear regression loses mean-square stability without the diagonal/delocalised approximation of 𝒦."""
    from scipy.optimize import brentq

    lam = torch.linalg.eigvalsh(ntk).numpy()
    eta_c = critical_lr(lam, batch_size, ntk.shape[-1], replace)
    rate = lambda eta: mean_square_rate(ntk, eta, batch_size, replace) - 1  # noqa: E731
    return brentq(rate, 0.5 * eta_c, 2 / lam.max(), xtol=1e-6)


def sgd_linear_regression(
    J: Tensor, y: Tensor, lrs: Tensor, batch_size: int, steps: int, seeds: int, replace: bool = False, seed: int = 0
) -> Tensor:
    """Monte Carlo of SGD θ ← θ − (η/b) J_Bᵀ(J_Bθ − y_B) on L = (1/2n)‖Jθ − y‖² from θ = 0: the final full-batch
    loss of every (seed, η), shape (seeds, len(lrs)), all runs vectorised. Batches are b distinct examples
    (``replace=False``) or b i.i.d. draws; every run has its own draws. Overflow is reported as ∞."""
    n, P = J.shape
    gen = torch.Generator().manual_seed(seed)
    runs = seeds * len(lrs)
    eta = lrs.to(J.dtype).repeat(seeds)[:, None, None]
    theta = torch.zeros(runs, P, 1, dtype=J.dtype)
    for _ in range(steps):
        if replace:
            idx = torch.randint(n, (runs, batch_size), generator=gen)
        else:
            idx = torch.rand(runs, n, generator=gen).argsort(-1)[:, :batch_size]
        JB = J[idx]  # (runs, b, P)
        theta = theta - eta / batch_size * (JB.transpose(1, 2) @ (JB @ theta - y[idx]))
    loss = 0.5 * ((J @ theta - y) ** 2).mean((-2, -1))
    return loss.nan_to_num(torch.inf).reshape(seeds, len(lrs))


NTK_SCALE: dict[str, Callable[[int], float]] = {
    "half_mse": lambda d: 1.0,
    "sum_mse": lambda d: 2.0,
    "mean_mse": lambda d: 2.0 / d,
}
"""Loss name → c(d): the loss's Gauss–Newton matrix is c·JᵀJ/n, so its NTK spectrum is c times Θ's (d outputs)."""


def ntk_eigenvalues(model: nn.Module, X: Tensor, params: Params | None = None, chunk_size: int | None = None) -> Tensor:
    """Eigenvalues (descending) of the empirical NTK Θ = JJᵀ/n, J the (n·d) × P Jacobian of the outputs over examples
    × outputs at ``params`` (default: the model's own), by torch.func Jacobians on chunks of ``chunk_size`` examples.

    Θ's nonzero spectrum is that of the Gauss–Newton matrix JᵀJ/n of the half-MSE loss (1/n) Σ_i ½‖f_i − y_i‖²
    (``half_mse``); for ``sum_mse`` multiply by 2, for ``mean_mse`` by 2/d (:data:`NTK_SCALE`). Only min(n·d, P)
    eigenvalues can be nonzero and only those are returned: the smaller Gram matrix, JJᵀ/n or JᵀJ/n (accumulated
    over chunks, so J is never held whole when P < n·d), is diagonalised.
    """
    theta = dict(params) if params is not None else {k: p.detach() for k, p in model.named_parameters()}
    space = ParamSpace(theta)
    frozen = dict(model.named_buffers())

    def f(p: Params, x: Tensor) -> Tensor:
        return functional_call(model, p | frozen, (x[None],)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))  # per-example Jacobians {name: (chunk, d, *shape)}
    n, chunk = len(X), chunk_size or len(X)
    blocks = (space.flatten(jac(theta, X[i : i + chunk]), batch_dims=2).flatten(0, 1) for i in range(0, n, chunk))
    if space.dim < n * f(theta, X[0]).numel():  # P < n·d: accumulate JᵀJ chunk by chunk
        gram = sum(block.T @ block for block in blocks)
    else:
        J = torch.cat(list(blocks))
        gram = J @ J.T
    return torch.linalg.eigvalsh(gram / n).flip(0).clamp_min(0)
