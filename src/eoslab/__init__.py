"""eoslab: edge-of-stability measurements on any PyTorch model.

The curvature API takes a module, a batch-mean loss ``loss_fn(pred, y)`` and data; see :mod:`eoslab.curvature`.
``SharpnessTracker`` (:mod:`eoslab.tracker`) measures inside your own training loop. Names are imported on first
use (PEP 562), so ``import eoslab`` and ``eoslab --help`` do not load torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_WHERE = {
    "curvature": [
        "Estimate",
        "InteractionSharpness",
        "batch_sharpness",
        "directional_sharpness",
        "gradient_norms",
        "hessian_trace",
        "interaction_sharpness",
        "layer_sharpness",
        "minibatch_sharpness",
        "sample_batches",
        "sharpness",
        "top_eigenvalues",
    ],
    "density": ["Density", "plot_density", "spectral_density"],
    "eigen": ["EigResult", "lanczos", "power_iteration"],
    "noise_kernel": ["critical_lr", "noise_kernel_norm", "ntk_eigenvalues"],
    "operators": ["HessianOperator", "MiniBatchHessians", "differentiable_attention"],
    "tracker": ["SharpnessTracker"],
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE)


def __getattr__(name: str):
    if name not in _MODULE:
        raise AttributeError(f"module 'eoslab' has no attribute {name!r}")
    value = getattr(import_module(f"eoslab.{_MODULE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
