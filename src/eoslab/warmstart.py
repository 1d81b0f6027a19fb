"""Starting a run from another run's parameters (e.g. Arora et al.'s NGD and √L-GD from a GD checkpoint).

The source run lists the steps to keep in ``save_params``; its NetCDF then holds θ at those steps as the variable
``saved_params`` (plain float64 numbers, flat in the model's parameter order; no pickled code). A dependent run sets
``init: {file: <source .nc>, step: N}`` and starts from θ_N of the source, with its own step counter at 0 and its
own update rule. In a profile, ``init: {from: <family>/<run>, step: N}`` names the source run; the pipeline fills in
its file (whose name carries the source config's hash, so a changed source changes the dependent's hash too) and
the Snakefile makes that file an input of the dependent run.
"""

from typing import Any

import torch
from torch import nn

from eoslab.config import ConfigError
from eoslab.operators import Params, ParamSpace
from eoslab.store import FINISHED, RunFileError, open_run


def flat_params(params: Params) -> list[float]:
    """θ as one flat list (the order of the parameter dict), what ``saved_params`` stores."""
    return ParamSpace(params).flatten(params).tolist()


def initial_params(model: nn.Module, config: dict[str, Any]) -> Params:
    """θ₀ of a run: the model's own (seeded) initialisation, or θ_N of the run file ``init.file``, which must be a
    finished run (complete or diverged) whose checksums pass; ``ConfigError`` naming ``init.file`` otherwise."""
    own = {k: p.detach().clone() for k, p in model.named_parameters()}
    init = config["init"]
    if init["file"] is None:
        if init["from"] is not None:
            raise ConfigError(f"init.from: {init['from']!r} is resolved by the pipeline; by hand, give init.file")
        return own
    try:
        ds = open_run(init["file"])
    except FileNotFoundError as error:
        raise ConfigError(f"init.file: {init['file']} does not exist") from error
    except RunFileError as error:
        raise ConfigError(f"init.file: {error}") from error
    if ds.attrs.get("status") not in FINISHED:
        raise ConfigError(
            f"init.file: {init['file']} is not a finished run (status {ds.attrs.get('status')!r}); finish it first"
        )
    if "saved_params" not in ds or init["step"] not in ds.saved_step.values:
        steps = ds.saved_step.values.tolist() if "saved_step" in ds.coords else []
        raise ConfigError(f"init.step: {init['file']} saved the parameters of steps {steps}, not {init['step']}")
    vec = torch.as_tensor(ds.saved_params.sel(saved_step=init["step"]).values)
    space = ParamSpace(own)
    if vec.numel() != space.dim:
        raise ConfigError(f"init.file: {vec.numel()} saved parameters, but the model has {space.dim}")
    return {k: v.to(own[k]) for k, v in space.unflatten(vec).items()}
