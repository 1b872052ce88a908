"""Benchmarks of the project, run with ``python -m bench`` (see docs/benchmarks.md).

Each figure is reported beside a ceiling or a peer measured in the same run on the same
machine (for example raw aiokafka on the same broker), because this machine is noisy and a
lone absolute number means little.
"""

from bench.harness import BenchContext, Figure, benchmark

__all__ = ["BenchContext", "Figure", "benchmark"]
