"""eoslab: edge-of-stability measurements on any PyTorch model.

The curvature API takes a module, a batch-mean loss ``loss_fn(pred, y)`` and data; see :mod:`eoslab.curvature`.
"""

from eoslab.curvature import (
    Estimate,
    InteractionSharpness,
    batch_sharpness,
    directional_sharpness,
    gradient_norms,
    hessian_trace,
    interaction_sharpness,
    layer_sharpness,
    minibatch_sharpness,
    sample_batches,
    sharpness,
    top_eigenvalues,
)
from eoslab.eigen import EigResult, lanczos, power_iteration
from eoslab.noise_kernel import critical_lr, noise_kernel_norm, ntk_eigenvalues
from eoslab.operators import HessianOperator, MiniBatchHessians

__version__ = "0.1.0"

__all__ = [
    "EigResult",
    "Estimate",
    "HessianOperator",
    "InteractionSharpness",
    "MiniBatchHessians",
    "batch_sharpness",
    "critical_lr",
    "directional_sharpness",
    "gradient_norms",
    "hessian_trace",
    "interaction_sharpness",
    "lanczos",
    "layer_sharpness",
    "minibatch_sharpness",
    "noise_kernel_norm",
    "ntk_eigenvalues",
    "power_iteration",
    "sample_batches",
    "sharpness",
    "top_eigenvalues",
]
