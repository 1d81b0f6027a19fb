"""Eigen-solvers on symmetric linear operators: Lanczos (top-k) and power iteration (top-1), batched.

Both solve m independent problems at once: ``matvec`` maps an (m, dim) tensor to (m, dim), row j by the j-th
operator (m = 1 for a single Hessian; m mini-batch Hessians with :class:`eoslab.operators.MiniBatchHessians`).
Everything stays in torch on the operator's device; only the small tridiagonal matrices go through ``eigh``.

Lanczos stops when every wanted Ritz value θ is within ``tol``·|θ| of an eigenvalue by an a-posteriori bound. By
default (``criterion="residual"``) the bound is the residual r = ‖Hy − θy‖: |λ − θ| ≤ r ≤ tol·|θ| for the
eigenvalue λ nearest θ, and the eigenvector is accurate too (e.g. to warm-start from). ``criterion="eigenvalue"``
sharpens the bound by the gap theorem (Kato–Temple; Parlett, *The Symmetric Eigenvalue Problem*, §11.7) to r²/δ, δ
the distance from θ to the rest of the spectrum, estimated from the neighbouring Ritz values (``error_bounds``) and
trusted once settled (:class:`StoppingRule`): a few products fewer, but an eigenvalue close to the top one that has
not entered the Krylov space yet is invisible to the estimate (over five draws each of W1, W2 and W3,
``benchmarks/stopping_rule.py``: 12 of 15 within tol, the worst 2.1e-2 low; the residual rule: 15 of 15, about 2
more products per call). Never is the stop on the change of λ between iterations: the top
eigenvalues of a wide network are often within 1% of each other and a "relative change < tol" rule stops long
before λ is accurate (``power_iteration(criterion="relative")`` reproduces PyHessian's rule for parity experiments).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EigResult:
    """Top eigenpairs, largest first, of m problems.

    values (m, k), vectors (m, k, dim), residuals (m, k) = ‖Hv − λv‖, errors (m, k) = the bound on |λ − θ| the
    stopping rule used (:func:`error_bounds`; the residual itself under ``criterion="residual"``), n_matvecs =
    products per problem. From Lanczos also the Gauss quadrature of each start vector q_1: ``nodes`` (m, j) = every
    Ritz value θ_i and ``weights`` (m, j) = (e_1ᵀ s_i)², so q_1ᵀ f(H) q_1 ≈ Σ_i weights_i f(nodes_i)
    (:mod:`eoslab.density`).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    n_matvecs: int
    converged: bool
    errors: Tensor
    nodes: Tensor | None = None
    weights: Tensor | None = None


def start_vector(
    toward: Tensor, v0: Tensor | None = None, generator: torch.Generator | None = None, noise: float = 0.1
) -> Tensor:
    """A unit start vector for each row of ``toward`` (m, dim), in its dtype and on its device.

    Warm: the sum of the warm-start vectors ``v0`` ((m, dim) or (m, k, dim)), e.g. the previous eigenvectors.
    Cold: the unit rows of ``toward`` plus ``noise`` × a unit Gaussian vector (noise alone where a row is zero).
    Pass the loss gradient: it lies mostly in the top Hessian eigenspace (Gur-Ari, Roberts & Dyer 2018), and the
    noise keeps every eigenvector in the Krylov space. On the 4×512 MLP benchmark (W1) Lanczos reaches a residual
    of 5e-3·λ in 12 HVPs from the gradient against 20 from noise alone.
    """
    if v0 is not None:
        v = (v0.sum(-2) if v0.dim() == 3 else v0).to(toward).reshape(toward.shape)
    else:
        r = torch.randn(toward.shape, dtype=toward.dtype, generator=generator, device="cpu").to(toward.device)
        direction = toward / toward.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(toward.dtype).tiny)
        v = direction + noise * r / r.norm(dim=-1, keepdim=True)
    return v / v.norm(dim=-1, keepdim=True)


def lanczos(
    matvec: MatVec,
    v0: Tensor,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
) -> EigResult:
    """Top-k eigenpairs of m symmetric operators by Lanczos with full reorthogonalisation.

    From q_1 = v0/‖v0‖ (one start vector per row of the (m, dim) ``v0``), builds the Krylov basis Q_j with
    H Q_j = Q_j T_j + β_j q_{j+1} e_jᵀ, T_j tridiagonal (α on the diagonal, β off it). Every new vector is
    reorthogonalised against all of Q_j by classical Gram–Schmidt, a second pass only where the first removed more
    than 1 − 1/√2 of its norm (the DGKS criterion). The Ritz pairs (θ_i, Q_j s_i) of T_j have residual
    ‖H y_i − θ_i y_i‖ = β_j |e_jᵀ s_i| exactly while Q_j stays orthonormal, which is what is reported. It stops when
    the k largest have ``error_bounds`` ≤ tol·|θ_i| (``criterion="eigenvalue"``: tol is the relative accuracy of
    the eigenvalues) or residuals ≤ tol·|θ_i| (``criterion="residual"``: also the eigenvectors). A breakdown
    (β_j ≈ 0: an invariant subspace was found) restarts with a random vector orthogonal to Q_j and β_j = 0, so the
    spectrum of T stays exact. The basis lives in one buffer that doubles when full.
    """
    if criterion not in ("eigenvalue", "residual"):
        raise ValueError(f"criterion must be 'eigenvalue' or 'residual', got {criterion!r}")
    m, dim = v0.shape
    steps, dtype = min(max_iter, dim), v0.dtype
    Q = torch.empty((m, min(steps, 8), dim), dtype=dtype, device=v0.device)
    Q[:, 0] = v0 / v0.norm(dim=-1, keepdim=True)
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    stop = StoppingRule(tol, criterion)
    for j in range(steps):
        q, B = Q[:, j], Q[:, : j + 1]
        w = matvec(q).to(dtype)
        alphas.append((q * w).sum(-1))
        w = w - alphas[-1][:, None] * q - (betas[-1][:, None] * Q[:, j - 1] if j else 0.0)
        w = orthogonalize(w, B)
        beta = w.norm(dim=-1)
        theta, S, top, residuals, errors = ritz_bounds(alphas, betas, beta, k, criterion)
        errors, done = stop(top, errors)
        done = done and j + 1 >= min(k, steps)
        if done or j + 1 == steps:
            break
        w, beta = next_vector(w, beta, alphas, generator, basis=B)
        betas.append(beta)
        if j + 1 == Q.shape[1]:
            Q = torch.cat([Q, torch.empty_like(Q[:, : min(8, steps - Q.shape[1])])], dim=1)
        Q[:, j + 1] = w
    n = len(alphas)
    order = theta.argsort(dim=-1, descending=True)[:, :k]
    S_top = torch.gather(S, 2, order[:, None, :].expand(-1, S.shape[1], -1)).to(dtype)
    vectors = torch.einsum("mjk,mjd->mkd", S_top, Q[:, :n])
    quadrature = (theta.to(dtype), (S[:, 0, :] ** 2).to(dtype))
    return EigResult(top.to(dtype), vectors, residuals.to(dtype), n, done, errors.to(dtype), *quadrature)


def short_lanczos(
    matvec: MatVec,
    v0: Tensor,
    tol: float = 1e-3,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
    vectors: bool = False,
) -> EigResult:
    """The top eigenpair of m symmetric operators by the Lanczos three-term recurrence alone: three vectors per
    problem in memory, whatever the number of steps.

    q_{j+1}β_j = Hq_j − α_jq_j − β_{j−1}q_{j−1} with α_j = q_jᵀHq_j, and no reorthogonalisation. In floating point
    the q_j lose orthogonality once a Ritz value converges and copies ("ghosts") of it appear among the Ritz values,
    but the largest Ritz value still converges to λmax, and β_j|e_jᵀs| stays its residual up to rounding (Paige,
    1976; Cullum & Willoughby, *Lanczos Algorithms for Large Symmetric Eigenvalue Computations*, 1985). The stopping
    rules are :func:`lanczos`'s (a ghost beside θ leaves no gap estimate: the bound is then the residual), and so is
    a breakdown's restart, without the orthogonalisation: T becomes block-diagonal, each block a Rayleigh–Ritz
    matrix of H. Memory O(m·dim) against :func:`lanczos`'s O(m·steps·dim) basis and its Gram–Schmidt, which dominate
    the stacked mini-batch problems (32 batches on a 2.4 M-parameter MLP: 18 GB). ``vectors=True`` repeats the
    recurrence with the recorded α, β to form the Ritz vectors (twice the products); otherwise ``vectors`` is empty,
    of shape (m, 1, 0).
    """
    if criterion not in ("eigenvalue", "residual"):
        raise ValueError(f"criterion must be 'eigenvalue' or 'residual', got {criterion!r}")
    steps = min(max_iter, v0.shape[1])
    q = v0 / v0.norm(dim=-1, keepdim=True)
    start = q if vectors else None  # kept only to replay the recurrence
    del v0  # (m, dim) fewer at the peak when the caller passes its start vector without keeping it
    q_prev, beta_prev = torch.zeros_like(q), torch.zeros_like(q[:, 0])
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    restarts: dict[int, Tensor] = {}  # step → the next vectors, where a breakdown restarted some problem
    stop = StoppingRule(tol, criterion)
    for j in range(steps):
        w = writable(matvec(q).to(q.dtype), q, q_prev)
        alphas.append(row_dots(q, w))
        w.addcmul_(alphas[-1][:, None], q, value=-1).addcmul_(beta_prev[:, None], q_prev, value=-1)
        beta = w.norm(dim=-1)
        theta, S, top, residuals, errors = ritz_bounds(alphas, betas, beta, 1, criterion)
        errors, done = stop(top, errors)
        if done or j + 1 == steps:
            break
        w, beta = next_vector(w, beta, alphas, generator)
        if bool((beta == 0).any()):
            restarts[j] = w
        betas.append(beta)
        q_prev, q, beta_prev = q, w, beta
    n = len(alphas)
    s = S[torch.arange(len(theta)), :, theta.argmax(-1)].to(q.dtype)  # (m, n): the top Ritz vector in T's basis
    y = q.new_zeros(q.shape[0], 0)
    if vectors:
        q, q_prev, y = start, torch.zeros_like(start), s[:, :1] * start
        for i in range(n - 1):
            w = matvec(q).to(q.dtype) - alphas[i][:, None] * q - (betas[i - 1][:, None] * q_prev if i else 0.0)
            w = restarts[i] if i in restarts else w / betas[i][:, None]
            y = y + s[:, i + 1 : i + 2] * w
            q_prev, q = q, w
    return EigResult(
        top.to(q.dtype), y[:, None], residuals.to(q.dtype), n * (1 + vectors) - vectors, done, errors.to(q.dtype)
    )


class StoppingRule:
    """When Lanczos stops: every wanted Ritz value θ has its error bound ≤ tol·|θ|.

    ``criterion="residual"``: the bound is the residual r, honest for the eigenvalue nearest θ. ``"eigenvalue"``:
    the gap bound of :func:`error_bounds`, trusted only once the Ritz values have settled: it is raised to at least
    the last step's change of θ, and must hold at two consecutive steps. The gap theorem assumes no other
    eigenvalue within δ of θ, and early on a Ritz value that blends two close outliers has a small residual and
    the bulk far below it, while the larger outlier is not resolved yet. Two outliers (4.0 and 4.2) over a bulk in
    [−1, 1], random starts, tol 1e-3: the bound alone stopped outside tol in 47 of 100 cases (6.1 products), the
    settled bound in 1 (9.1 products; the residual rule: 1, 8.8 products). A top pair 1 % apart stays hard: 13 of
    100 (76 by the bound alone, 3 by the residual rule), within 1 % of λmax every time.
    """

    def __init__(self, tol: float, criterion: str):
        self.tol, self.criterion = tol, criterion
        self.previous: Tensor | None = None
        self.held = False

    def __call__(self, top: Tensor, errors: Tensor) -> tuple[Tensor, bool]:
        """(the bounds, whether to stop) at one step, for the k largest Ritz values ``top`` (m, k)."""
        if self.criterion == "residual":
            return errors, bool((errors <= self.tol * top.abs()).all())
        settled = self.previous is not None and self.previous.shape == top.shape  # T_j has k values by now
        moved = (top - self.previous).abs() if settled else torch.full_like(top, torch.inf)
        errors = torch.maximum(errors, moved)
        holds = bool((errors <= self.tol * top.abs()).all())
        done, self.previous, self.held = holds and self.held, top, holds
        return errors, done


def ritz_bounds(
    alphas: list[Tensor], betas: list[Tensor], beta: Tensor, k: int, criterion: str
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The Ritz decomposition of T_j (θ ascending, S) and, for its k largest values (descending), θ, the residuals
    β_j|e_jᵀs_i| and the bounds the stopping rule compares with tol·|θ| (the residual, or :func:`error_bounds`)."""
    theta, S = ritz(alphas, betas)
    descending = theta.flip(-1)
    every = (beta[:, None] * S[:, -1, :].flip(-1)).abs()
    residuals = every[:, :k]
    errors = residuals if criterion == "residual" else error_bounds(descending, every, k)
    return theta, S, descending[:, :k], residuals, errors


def next_vector(
    w: Tensor, beta: Tensor, alphas: list[Tensor], generator: torch.Generator | None, basis: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(q_{j+1}, β_j) from the unnormalised w = β_jq_{j+1}: w/β_j (w divided in place), or where β_j vanishes (a
    breakdown: the Krylov space is invariant) a fresh random unit vector, orthogonal to ``basis`` if given, with
    β_j = 0, so that the spectrum of T stays exact."""
    m, dim = w.shape
    scale = torch.stack([a.abs() for a in alphas]).amax(0) + 1.0
    broken = beta <= 10 * torch.finfo(w.dtype).eps * scale * dim**0.5
    if not broken.any():
        return w.div_(beta[:, None]), beta
    fresh = torch.randn((m, dim), dtype=w.dtype, generator=generator, device="cpu").to(w.device)
    if basis is not None:
        fresh = orthogonalize(orthogonalize(fresh, basis), basis)
    w = torch.where(broken[:, None], fresh / fresh.norm(dim=-1, keepdim=True), w / beta[:, None])
    return w, torch.where(broken, torch.zeros_like(beta), beta)


def row_dots(a: Tensor, b: Tensor) -> Tensor:
    """(a_i · b_i)_i for the rows of two (m, dim) tensors, by one batched matrix product: no (m, dim) temporary
    (``torch.linalg.vecdot`` makes one; 32 × 2.4 M float32: 0.12 s against 0.25 s, one thread)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(a.shape[0])


def writable(w: Tensor, *kept: Tensor) -> Tensor:
    """``w``, or a contiguous copy where it shares memory with a vector the caller keeps (a matvec that returns its
    input, or a view of it) or is not contiguous (e.g. expanded): the recurrence then updates w in place. Updating
    the products in place skips an (m, dim) allocation per update, which on large stacked problems costs as much as
    the arithmetic (page faults on newly mapped memory)."""
    ptr = w.untyped_storage().data_ptr()
    shared = any(ptr == v.untyped_storage().data_ptr() for v in kept)
    return w.clone(memory_format=torch.contiguous_format) if shared or not w.is_contiguous() else w


def error_bounds(theta: Tensor, residuals: Tensor, k: int) -> Tensor:
    """Bounds on |λ − θ_i| for the k largest of the Ritz values ``theta`` (m, j), descending, with ``residuals`` r.

    min(r_i, r_i²/δ_i) (Kato–Temple), δ_i = the distance from θ_i to the nearest other Ritz value less that value's
    residual (the eigenvalue it approximates may lie up to its residual closer), and at most |θ_i|. Ritz values of a
    Krylov space resolve the spectrum's top first, so the neighbours estimate the gap to the rest of the spectrum;
    but a small space's lower Ritz values sit near the bottom of the spectrum, far below eigenvalues it has not
    seen yet. The cap |θ_i| is the gap to a bulk at 0, where a loss Hessian's bulk sits (it asks r ≤ √tol·|θ|):
    without it, warm starts in training runs stopped after 2 products 1–4 % low. The lowest Ritz value has no lower
    neighbour yet, and a δ ≤ 0 (a cluster not yet resolved) says nothing: the bound is r.
    """
    r, gaps = residuals, theta[:, :-1] - theta[:, 1:]
    inf = torch.full_like(theta[:, :1], torch.inf)
    above = torch.cat([inf, gaps - r[:, :-1]], dim=-1)
    below = torch.cat([gaps - r[:, 1:], torch.zeros_like(inf)], dim=-1)
    delta = torch.minimum(torch.minimum(above, below)[:, :k], theta[:, :k].abs())
    r = r[:, :k]
    return torch.where(delta > 0, torch.minimum(r, r**2 / delta.clamp_min(torch.finfo(r.dtype).tiny)), r)


def orthogonalize(w: Tensor, B: Tensor) -> Tensor:
    """w − B Bᵀ w for each problem (rows of w (m, dim) against the orthonormal columns of B (m, j, dim)), repeated
    once where the projection removed more than 1 − 1/√2 of the norm (Daniel–Gragg–Kaufman–Stewart)."""
    before = w.norm(dim=-1)
    w = w - torch.einsum("mj,mjd->md", torch.einsum("mjd,md->mj", B, w), B)
    if bool((w.norm(dim=-1) < before / 2**0.5).any()):
        w = w - torch.einsum("mj,mjd->md", torch.einsum("mjd,md->mj", B, w), B)
    return w


def ritz(alphas: list[Tensor], betas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition (ascending) of the m tridiagonal matrices T with diagonal α and off-diagonal β."""
    a = torch.stack(alphas, dim=-1).double()
    T = torch.diag_embed(a)
    if betas:
        b = torch.stack(betas[: a.shape[-1] - 1], dim=-1).double()
        T = T + torch.diag_embed(b, offset=1) + torch.diag_embed(b, offset=-1)
    return torch.linalg.eigh(T)


def power_iteration(
    matvec: MatVec,
    v0: Tensor,
    tol: float = 1e-3,
    max_iter: int = 100,
    criterion: str = "residual",
) -> EigResult:
    """The dominant eigenpair (largest |λ|; the sign is kept) of m operators by power iteration.

    v ← Hv/‖Hv‖, λ = vᵀHv. ``criterion="residual"`` stops when ‖Hv − λv‖ ≤ tol·|λ| for every problem;
    ``criterion="relative"`` stops when |λ_t − λ_{t−1}| ≤ tol·|λ_{t−1}| (PyHessian's rule, used by Fox 2023).
    """
    if criterion not in ("residual", "relative"):
        raise ValueError(f"criterion must be 'residual' or 'relative', got {criterion!r}")
    v = v0 / v0.norm(dim=-1, keepdim=True)
    lam_prev = None
    for i in range(max_iter):
        w = matvec(v).to(v.dtype)
        lam = (v * w).sum(-1)
        residual = (w - lam[:, None] * v).norm(dim=-1)
        if criterion == "residual":
            done = bool((residual <= tol * lam.abs()).all())
        else:
            done = lam_prev is not None and bool(((lam - lam_prev).abs() <= tol * lam_prev.abs()).all())
        if done or i + 1 == max_iter:
            break
        lam_prev = lam
        v = w / w.norm(dim=-1, keepdim=True)
    return EigResult(lam[:, None], v[:, None, :], residual[:, None], i + 1, done, residual[:, None])
