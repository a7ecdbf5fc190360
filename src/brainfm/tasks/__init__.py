"""Downstream tasks on frozen features: specs, sample assembly, head banks, runners."""

from brainfm.tasks.spec import SplitSpec, TaskSpec

__all__ = ["TaskSpec", "SplitSpec"]
