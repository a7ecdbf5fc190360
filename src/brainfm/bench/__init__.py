"""Measured benchmarks of the pipeline's costly steps, one module per benchmark (``brainfm bench``).

:mod:`~brainfm.bench.suite` runs them; :mod:`~brainfm.bench.measure` holds what they share
(timing, machine description).
"""
