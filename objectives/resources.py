"""What a trial costs in memory: the process's peak resident set (RSS) while the trial ran, and
the peak CUDA memory torch allocated, where there is a GPU.

A process-lifetime peak (getrusage's ru_maxrss) would say the largest trial so far, not this one.
On Linux, writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM) to the
current RSS, so each trial's peak is its own; elsewhere the lifetime peak is what there is.
Hand-written because psutil exposes neither the reset nor
VmHWM (its memory_info().rss is the current size, which a sampler would have to poll).
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class PeakMemory:
    rss_mb: float
    cuda_mb: float | None  # None: no CUDA device in use


class MemoryWatch:
    """Reset the peaks when a trial starts (`start`), read them when it ends (`peak`)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.per_trial = False

    def start(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")
            self.per_trial = True
        except OSError:  # not Linux, or /proc not writable (some sandboxes)
            self.per_trial = False
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> PeakMemory:
        rss = _vm_hwm_mb() if self.per_trial else None
        if rss is None:  # ru_maxrss: kB on Linux, bytes on macOS
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
                2**20 if sys.platform == "darwin" else 1024
            )
        cuda = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        return PeakMemory(rss_mb=rss, cuda_mb=cuda)


def _vm_hwm_mb() -> float | None:
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None
