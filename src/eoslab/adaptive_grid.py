"""An adaptive sweep axis: extend a grid until every group's best cell lies strictly inside it.

A sweep's ``sweep.extend`` section, ``{key: optimizer.lr, factor: 2, rounds: 4, by: final_test_accuracy}``, makes
``eoslab sweep`` look at its cells after running them: for every group of cells sharing the other grid values (e.g.
one seed), the best cell by ``by`` (largest; a diverged cell is the worst); if some group's best sits at the top
(bottom) value of ``key``, the axis grows by one value, top × factor (bottom / factor), for every group, and the new
cells run. It stops when every group's best is strictly inside, or after ``rounds`` extensions (then the edge is
reported by the figure). The cell above the best then diverged or scored lower, for every group.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from eoslab.config import _obj

SCHEMA = _obj(
    {
        "key": {"type": "string", "description": "the grid key to extend (a numeric axis)"},
        "factor": {"type": "number", "exclusiveMinimum": 1, "default": 2},
        "rounds": {"type": "integer", "minimum": 0, "default": 4, "description": "extensions at most, per side"},
        "by": {"enum": ["final_test_accuracy", "final_train_accuracy"], "default": "final_test_accuracy"},
    },
    ("key",),
)


def _score(row: Mapping[str, Any], by: str) -> float:
    value = row[by]
    return -math.inf if row["diverged"] or not math.isfinite(value) else value


def best_values(points: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], key: str, by: str) -> list:
    """Per group of cells equal on every grid key but ``key``: the ``key`` value of its best cell (ties: the
    smaller value)."""
    groups: dict[tuple, list[tuple[float, Any]]] = {}
    for point, row in zip(points, rows, strict=True):
        group = tuple((k, v) for k, v in point.items() if k != key)
        groups.setdefault(group, []).append((-_score(row, by), point[key]))
    return [min(cells)[1] for cells in groups.values()]


def extension(
    extend: Mapping[str, Any], points: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], rounds: int
) -> list[dict[str, Any]]:
    """The cells to add after ``rounds`` extensions so far: one new value of ``extend["key"]`` beyond each edge
    that some group's best cell sits on, crossed with every group; [] when no group's best is on an edge (or the
    rounds are spent)."""
    key, factor = extend["key"], extend["factor"]
    if rounds >= extend["rounds"]:
        return []
    values = sorted({p[key] for p in points})
    best = set(best_values(points, rows, key, extend["by"]))
    new = [v for edge, v in ((values[-1], values[-1] * factor), (values[0], values[0] / factor)) if edge in best]
    groups = list(dict.fromkeys(tuple((k, v) for k, v in p.items() if k != key) for p in points))
    order = list(points[0])
    return [{k: dict(group).get(k, value) for k in order} for value in new for group in groups]
