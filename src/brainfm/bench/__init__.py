"""Measured benchmarks of the pipeline's costly steps (``python -m brainfm.bench.extraction``)."""
