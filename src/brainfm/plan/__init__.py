"""Planning a run before starting it: what is missing, how many jobs and submissions, what it costs.

* :mod:`~brainfm.plan.inventory`  real datasets and weights files: found, or what to do to get them
* :mod:`~brainfm.plan.jobs`       Snakemake's dry run: jobs per rule, SLURM submissions after grouping
* :mod:`~brainfm.plan.cost`       projected disk (store sizes) and GPU-hours (benchmarks, published figures)
* :mod:`~brainfm.plan.report`     ``plan``: the whole report; ``format_plan``: as text
"""

from brainfm.plan.report import format_plan, plan

__all__ = ["format_plan", "plan"]
