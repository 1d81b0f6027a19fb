"""``eoslab config --template``: a commented run config generated from the schema, every key with its default.

Generated from :data:`eoslab.config.SCHEMA`, so a key added to the schema appears here with its description; the
notes below say more than the schema's one-line descriptions. The printed template validates as it is.
"""

from typing import Any

from eoslab.config import SCHEMA

EXAMPLE: dict[str, Any] = {
    "data": {"name": "digits", "n_train": 512, "n_test": 128},
    "model": {"name": "mlp", "width": 64, "depth": 2},
    "optimizer": {"lr": 0.1},
    "steps": 1000,
}
"""Values for the required keys (the schema has no default for them)."""

NOTES: dict[str, str] = {
    "device": "cpu, cuda, cuda:N or mps",
    "name": "a label stored in the NetCDF attributes",
    "dtype": "float64 for tiny nets (exact checks), float32 otherwise",
    "data": "a mapping: `name` plus the loader's keyword arguments (eoslab.data.<name>, e.g. n_train, subset)",
    "model": "a mapping: `name` plus the constructor's keyword arguments (eoslab.models.<name>, e.g. width, depth)",
    "loss": "batch-mean loss; half_mse = ½‖f − y‖² summed over outputs (see docs/README.md, conventions)",
    "optimizer.lr": "the step size η; the edge of stability is at sharpness 2/η",
    "optimizer.batch_size": "SGD's mini-batch size b (required for rule sgd, null otherwise)",
    "optimizer.sampling": "subset: b distinct examples per step; iid: with replacement; reshuffle: epochs",
    "optimizer.schedule": "step-size schedule (constant: η throughout)",
    "optimizer.eps": "ε of the normalised update rules",
    "steps": "number of update steps T",
    "measure": "what is measured, and when (every `every` steps; every `early_every` steps before `early_until`)",
    "measure.subset": "measure full-batch quantities on the first n training examples (null: all)",
    "measure.chunk_size": "examples per chunk of the full-batch Hessian (null: all at once)",
    "measure.tol": "relative tolerance of the Lanczos solves",
    "measure.max_iter": "Lanczos iterations at most",
    "measure.top_k": "number of top eigenvalues of the full-batch Hessian",
    "measure.batch_size": "mini-batch size b of MiniBS, Batch Sharpness and tr(HS_b) (null: SGD's b)",
    "measure.trace": "a COUNT: Hutchinson probes for tr(H) (0: off)",
    "measure.grad_norms": "a FLAG: the gradient norm of every layer",
    "measure.sharpness": "FullBS: λmax of the full-batch Hessian (top_k eigenvalues)",
    "measure.minibatch": "a COUNT: number of mini-batches for MiniBS and Batch Sharpness (0: off)",
    "measure.layers": "a FLAG: layer sharpness, λmax of each layer's Hessian block",
    "measure.directional": "a FLAG: ∇LᵀH∇L/‖∇L‖²",
    "measure.interaction": "a COUNT: batches for interaction-aware sharpness tr(HS_b)/tr(S_b) (0: off)",
    "measure.interaction_exact": "a FLAG: the exact tr(HS_b) from per-example gradients instead",
    "measure.test": "a FLAG: test loss and accuracy",
    "divergence.max_loss": "a loss above this (or NaN) stops the run as `diverged` (a result, exit status 0)",
}


def _comment(key: str, spec: dict[str, Any], required: bool) -> str:
    parts = [NOTES.get(key) or spec.get("description", "")]
    if "enum" in spec and spec.get("type") != "object":
        parts.append("one of: " + ", ".join(map(str, spec["enum"])))
    if required:
        parts.append("required")
    return "  # " + "; ".join(p for p in parts if p) if any(parts) else ""


def _lines(schema: dict[str, Any], example: dict[str, Any], prefix: str, indent: int) -> list[str]:
    out = []
    for key, spec in schema["properties"].items():
        dotted = f"{prefix}{key}"
        required = key in schema.get("required", ())
        pad = "  " * indent
        if key in example and isinstance(example[key], dict) and spec.get("additionalProperties", True):
            out.append(f"{pad}{key}:{_comment(dotted, spec, required)}")
            out += [f"{pad}  {k}: {_scalar(v)}" for k, v in example[key].items()]
        elif spec.get("type") == "object":
            out.append(f"{pad}{key}:{_comment(dotted, spec, required)}")
            out += _lines(spec, example.get(key, {}), f"{dotted}.", indent + 1)
        elif key in example or "default" in spec:
            value = example[key] if key in example else spec["default"]
            out.append(f"{pad}{key}: {_scalar(value)}{_comment(dotted, spec, required)}")
    return out


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def template() -> str:
    """The commented YAML template (required keys filled with a small digits run)."""
    head = [
        "# eoslab run config: `eoslab run THIS.yaml --out run.nc` (override with --set key=value).",
        "# Every key below shows its default; only data, model, optimizer.lr and steps are required.",
    ]
    return "\n".join(head + _lines(SCHEMA, EXAMPLE, "", 0)) + "\n"
