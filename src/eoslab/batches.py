"""Data for full-batch quantities: one pair of tensors (X, y), or any iterable of (X, y) batches (a DataLoader).

L = (1/n) Σ_i ℓ_i = Σ_c (n_c/n) L_c over chunks c of n_c examples, L_c the chunk's batch-mean loss: whatever the
batching (batches of different sizes, a short last batch), the weights n_c/n make every full-batch quantity equal
to the one-tensor result. Batches are used as they come (on the model's device, in its dtype: move them in the
loader); a one-shot iterator (a generator) is read into a list, a re-iterable one (a DataLoader) is read once here
(to count n and check the batches) and once per pass of the computation.
"""

from collections.abc import Iterable, Iterator

from torch import Tensor

Data = Tensor | Iterable[tuple[Tensor, Tensor]]


class Batches:
    """``X, y`` tensors or ``X`` an iterable of (X, y) batches (``y`` None), split into chunks of ``chunk_size``.

    Iterating yields (n_c/n, X_c, y_c) for every chunk; ``n`` is the number of examples. ``streamed`` says whether
    the data comes in several chunks (a loader or a ``chunk_size``), i.e. whether one graph over all of it would
    hold all of it.
    """

    def __init__(self, X: Data, y: Tensor | None = None, chunk_size: int | None = None):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be ≥ 1 (examples per chunk), got {chunk_size}")
        self.is_tensor = isinstance(X, Tensor)
        if self.is_tensor:
            if y is None:
                raise ValueError("y is missing: pass targets y with a tensor X, or X as an iterable of (X, y) batches")
            self.source: Iterable[tuple[Tensor, Tensor]] = [(X, y)]
        else:
            if y is not None:
                raise ValueError("y must be None when X is an iterable of (X, y) batches (e.g. a DataLoader)")
            self.source = X if iter(X) is not X else list(X)
        self.chunk_size = chunk_size
        self.n = 0
        for i, (Xb, yb) in enumerate(self.pairs()):
            if len(Xb) != len(yb):
                where = "" if self.is_tensor else f" in batch {i}"
                raise ValueError(f"X has {len(Xb)} examples but y has {len(yb)}{where}")
            self.n += len(Xb)
        if self.n == 0:
            raise ValueError("X is empty: there are no examples to measure on")
        self.streamed = not self.is_tensor or chunk_size is not None

    def pairs(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The non-empty (X, y) batches as given."""
        for Xb, yb in self.source:
            if len(Xb):
                yield Xb, yb

    def __iter__(self) -> Iterator[tuple[float, Tensor, Tensor]]:
        for Xb, yb in self.pairs():
            size = self.chunk_size or len(Xb)
            for Xc, yc in zip(Xb.split(size), yb.split(size), strict=True):
                yield len(Xc) / self.n, Xc, yc

    def tensors(self, what: str) -> tuple[Tensor, Tensor]:
        """The one (X, y) pair; ``what`` (the function) needs random access to the examples."""
        if not self.is_tensor:
            raise ValueError(f"{what} samples examples by index: pass X and y as tensors, not an iterable of batches")
        return next(self.pairs())
