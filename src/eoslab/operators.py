"""Hessians as linear operators on flat parameter vectors, built with torch.func.

An operator here is an object with ``matvec(v) -> Hv`` over vectors of its ``dim`` (``v`` may carry leading batch
dimensions: each row is multiplied separately, vectorised with ``vmap``). Eigen-solvers and trace estimators in
:mod:`eoslab.eigen` and :mod:`eoslab.curvature` only ever see ``matvec``.

HVP route. The interface is torch.func's: parameters are a dict θ, the loss is a pure function of it through
``functional_call``, mini-batches are stacked with ``vmap``. Underneath, the operator differentiates with plain
autograd: it builds the gradient g = ∇L(θ) once at leaf copies of θ with ``create_graph=True`` and every product
Hv = ∂(gᵀv)/∂θ is one backward pass through that retained graph (double backward; rows of a batch of vectors by one
vmapped backward, ``is_grads_batched``). Measured side by side on a 4×512 tanh MLP (3072 inputs, n = 1024; see
``benchmarks/sharpness_vs_peers.py``), this product costs what PyHessian's does (it is the same computation) and
1.39 gradients on one thread against 1.44 for the reused ``torch.func.vjp(grad(L))`` closure this module used
before, 1.66 against 2.00 on two threads; ``jvp(grad(L))`` per product costs ~3 gradients and a reused
``torch.func.linearize`` ~1.4 after a build of ~12. Plain autograd also spares each process torch.func's first-call
import of the compiler stack (~0.9 s), which every short pipeline job would pay.

Memory. Unchunked, the gradient's graph is kept for all products. ``chunk_size`` bounds memory by one chunk: each
product rebuilds the chunk graphs one at a time (a gradient plus a backward per chunk, ~2.4 gradients per product
instead of ~1.4); keeping every chunk's graph (``reuse=True``) saves no memory.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from eoslab.losses import LossFn

Params = dict[str, Tensor]
ObjectiveFn = Callable[[Params, Tensor, Tensor], Tensor]


class ParamSpace:
    """The map between a dict of parameter tensors and one flat vector (concatenated in dict order)."""

    def __init__(self, params: Params):
        self.shapes = {k: v.shape for k, v in params.items()}
        self.sizes = [v.numel() for v in params.values()]
        self.dim = sum(self.sizes)

    def flatten(self, tree: Params, batch_dims: int = 0) -> Tensor:
        """Concatenate ``tree``'s tensors into shape (*batch, dim)."""
        return torch.cat([t.reshape(*t.shape[:batch_dims], -1) for t in tree.values()], dim=-1)

    def unflatten(self, vec: Tensor) -> Params:
        """Split a (*batch, dim) tensor into the parameter shapes, keeping the batch dimensions."""
        parts = vec.split(self.sizes, dim=-1)
        return {k: p.reshape(*vec.shape[:-1], *s) for (k, s), p in zip(self.shapes.items(), parts, strict=True)}


def split_params(
    model: nn.Module, params: Params | None = None, names: Iterable[str] | None = None
) -> tuple[Params, Params]:
    """(θ, frozen): θ the parameters to differentiate (``names``, default all), frozen the rest plus buffers.

    ``params`` overrides the module's current values (the run engine keeps its parameters in a dict).
    """
    values = dict(params) if params is not None else {k: p.detach() for k, p in model.named_parameters()}
    selected = list(values) if names is None else list(names)
    unknown = [k for k in selected if k not in values]
    if unknown:
        raise KeyError(f"no parameters named {unknown}; the model has {list(values)}")
    theta = {k: values[k] for k in selected}
    frozen = {k: v for k, v in values.items() if k not in theta} | dict(model.named_buffers())
    return theta, frozen


def objective(model: nn.Module, loss_fn: LossFn, frozen: Params) -> ObjectiveFn:
    """L(θ; X, y) = loss_fn(model(X; θ ∪ frozen), y), a pure function of the parameter dict θ."""

    def f(theta: Params, X: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(model, theta | frozen, (X,)), y)

    return f


def grad_and_value(f: Callable[..., Tensor]) -> Callable[..., tuple[Params, Tensor]]:
    """``torch.func.grad_and_value(f)`` for f(θ, *args) with θ a parameter dict, by one eager backward pass.

    Same numbers; it skips torch.func's first-call import of the compiler stack (``torch._dynamo``, ~0.9 s of CPU
    per process), which every short engine job would pay for its training gradients.
    """

    def wrapper(theta: Params, *args: Any) -> tuple[Params, Tensor]:
        leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
        with torch.enable_grad():
            value = f(leaves, *args)
            grads = torch.autograd.grad(value, list(leaves.values()), materialize_grads=True)
        return dict(zip(theta, grads, strict=True)), value.detach()

    return wrapper


class Graph:
    """A differentiable gradient g = ∇_θ f at fresh leaf copies of θ, kept for Hessian-vector products.

    ``hvp(T)`` = ∂(gᵀT)/∂θ by one backward pass through g's graph (double backward, the graph retained); with
    ``batched`` the tangents carry one leading batch dimension, multiplied by one vmapped backward.
    """

    def __init__(self, f: Callable[[Params], Tensor], theta: Params):
        self.leaves = {k: v.detach().requires_grad_() for k, v in theta.items()}
        with torch.enable_grad():
            value = f(self.leaves)
            grads = torch.autograd.grad(value, list(self.leaves.values()), create_graph=True, materialize_grads=True)
        self.value = value.detach()
        self.gradient = {k: g.detach() for k, g in zip(theta, grads, strict=True)}
        self._grads = {k: g for k, g in zip(theta, grads, strict=True) if g.requires_grad}  # the rest are constant

    def hvp(self, tangent: Params, batched: bool = False) -> Params:
        if not self._grads:
            return {k: torch.zeros_like(t) for k, t in tangent.items()}
        leaves = list(self.leaves.values())
        if batched:
            tangents = [tangent[k] for k in self._grads]
            out = torch.autograd.grad(
                list(self._grads.values()), leaves, tangents, True, materialize_grads=True, is_grads_batched=True
            )
        else:  # ∂(gᵀv)/∂θ of the scalar: passing v as grad_outputs would import torch's symbolic-shapes module
            dot = sum((g * tangent[k]).sum() for k, g in self._grads.items())
            out = torch.autograd.grad(dot, leaves, retain_graph=True, materialize_grads=True)
        return dict(zip(self.leaves, out, strict=True))


class HessianOperator:
    """H = ∇²_θ L(θ), the Hessian of the batch-mean loss over (X, y) w.r.t. the parameters ``names``.

    L = Σ_c (n_c/n)·L_c over chunks of at most ``chunk_size`` examples, so H, the gradient ∇L and the loss are
    exact full-batch quantities whatever the chunking. Memory: unchunked, the gradient's graph is built once and
    kept for every product (fastest); with ``chunk_size`` each product rebuilds one chunk's graph at a time, so
    memory is bounded by one chunk (about 1.7× the time per product, see the module docstring). ``reuse`` overrides
    that choice (``reuse=True`` keeps every chunk's graph: no memory saved). Restricting ``names`` to one layer's
    (W_i, b_i) gives the Hessian block of that layer with all other parameters fixed (the layer sharpness).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        X: Tensor,
        y: Tensor,
        params: Params | None = None,
        names: Iterable[str] | None = None,
        chunk_size: int | None = None,
        reuse: bool | None = None,
    ):
        self.theta, frozen = split_params(model, params, names)
        self.space = ParamSpace(self.theta)
        self.dim = self.space.dim
        self.f = objective(model, loss_fn, frozen)
        n = X.shape[0]
        size = n if chunk_size is None else chunk_size
        self.chunks = [(len(Xc) / n, Xc, yc) for Xc, yc in zip(X.split(size), y.split(size), strict=True)]
        self.reuse = chunk_size is None if reuse is None else reuse
        self.n_matvecs = 0
        self.gradient, self.loss, self._graphs = X.new_zeros(()), X.new_zeros(()), []
        for w, Xc, yc in self.chunks:  # one chunk's graph alive at a time unless reused
            graph = self._graph(Xc, yc)
            self.gradient = self.gradient + w * self.space.flatten(graph.gradient)
            self.loss = self.loss + w * graph.value
            if self.reuse:
                self._graphs.append(graph)
            del graph

    def _graph(self, Xc: Tensor, yc: Tensor) -> Graph:
        return Graph(lambda th: self.f(th, Xc, yc), self.theta)

    def matvec(self, v: Tensor) -> Tensor:
        """Hv for v of shape (dim,) or (*batch, dim)."""
        self.n_matvecs += v.numel() // self.dim
        V = v.to(self.gradient.dtype).reshape(-1, self.dim)
        tangent, batched = self.space.unflatten(V[0] if len(V) == 1 else V), len(V) > 1
        out = 0.0
        for i, (w, Xc, yc) in enumerate(self.chunks):
            graph = self._graphs[i] if self.reuse else self._graph(Xc, yc)
            out = out + w * self.space.flatten(graph.hvp(tangent, batched), batch_dims=int(batched))
            del graph
        return out.reshape(v.shape).detach()


class MiniBatchHessians:
    """The m mini-batch Hessians H_{B_j} = ∇²_θ L_{B_j}(θ) as one block-diagonal operator on (m, dim) tensors.

    L_{B_j} = (1/b) Σ_{i∈B_j} ℓ_i. The m problems are stacked: with one copy θ_j of the parameters per batch,
    F(θ_1..θ_m) = Σ_j L_{B_j}(θ_j) (the m losses by one vmapped forward) has the block-diagonal Hessian
    diag(H_{B_1}, ..., H_{B_m}), and one product with the reused gradient graph of F multiplies every block at once.
    ``gradients[j]`` is g_{B_j} = ∇L_{B_j}.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        Xs: Tensor,
        ys: Tensor,
        params: Params | None = None,
        names: Iterable[str] | None = None,
    ):
        theta, frozen = split_params(model, params, names)
        self.space = ParamSpace(theta)
        self.dim = self.space.dim
        self.m = Xs.shape[0]
        f = objective(model, loss_fn, frozen)
        stacked = {k: v.expand(self.m, *v.shape) for k, v in theta.items()}
        losses: list[Tensor] = []

        def total(th: Params) -> Tensor:
            losses.append(vmap(f)(th, Xs, ys))
            return losses[-1].sum()

        self._graph = Graph(total, stacked)
        self.losses = losses[0].detach()
        self.gradients = self.space.flatten(self._graph.gradient, batch_dims=1)
        self.n_matvecs = 0

    def matvec(self, V: Tensor) -> Tensor:
        """(H_{B_1} V_1, ..., H_{B_m} V_m) for V of shape (m, dim)."""
        self.n_matvecs += 1
        tangent = self.space.unflatten(V.to(self.gradients.dtype))
        return self.space.flatten(self._graph.hvp(tangent), batch_dims=1).detach()
