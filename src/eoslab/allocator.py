"""Keep freed memory in the process heap, so that large tensors are not handed back to the kernel after every
operation and faulted in, zeroed, again by the next one.

glibc serves an allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on free.
The stacked mini-batch operators make tensors of m × dim floats (32 batches of a 0.3 M-parameter MLP: 38 MB), so
every step of their Lanczos recurrence paid page faults on new memory: on the F1 MNIST-1D scan run (b = 8, η = 0.1)
17.7 s of system time in 54 s. With the heap kept (``mmap_max = 0``, a trim threshold of 1 GiB) the same run takes
29 s, 1.2 s of it system time, with bit-identical results; the price is a higher peak of resident memory (freed
blocks inside the heap are reused, not returned: 1.25 GB against 0.79 GB on that run; 32 stacked mini-batches of a
2.4 M-parameter MLP peaked at 10–11 GB against 2.9 GB, for 71–73 s against 74–80 s). The same effect, for any
process, from the environment: ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1073741824``.
Other C libraries: no change.
"""

import ctypes

M_TRIM_THRESHOLD = -1  # <malloc.h>: free memory kept at the top of the heap before it is returned
M_MMAP_MAX = -4  # <malloc.h>: how many allocations may be served by mmap (0: none, all from the heap)


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Serve every allocation from the heap and keep up to ``trim_threshold`` bytes of freed memory there
    (glibc ``mallopt``); True if the C library took both settings. Call it before the large allocations start
    (the CLI does, before importing torch)."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
