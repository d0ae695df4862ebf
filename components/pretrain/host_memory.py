"""Keep freed host memory inside the process while training on CPU.

glibc returns large freed blocks to the kernel (munmap, heap trimming) and the next step's
activations of the same size page-fault it back in, a few hundred faults per MB every step. On a
small CPU model that is several percent of the step time, charged to whichever op first writes a
fresh buffer. Raising the mmap and trim thresholds (what `MALLOC_MMAP_THRESHOLD_` and
`MALLOC_TRIM_THRESHOLD_` do at process start) keeps the memory mapped, the role jemalloc or
tcmalloc play in other CPU training setups, without preloading a second allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("kiln.train")

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit: larger blocks are always mmapped
TRIM_THRESHOLD = 1 << 30


@functools.cache
def retain_freed_memory() -> bool:
    """Tell glibc to keep freed blocks up to 32 MB (and up to 1 GB of free heap top) for reuse.

    Returns whether the allocator took the setting (False off glibc, e.g. macOS or musl).
    Process-wide and idempotent.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    ok = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    if not ok:
        log.debug("mallopt refused the thresholds; keeping the allocator's defaults")
    return ok
