"""Datasets: manifests, subject-disjoint splits, and the embedded phantom cohort.

Everything downstream learns about images only through a dataset's validated ``manifest.parquet``
(:mod:`brainfm.data.manifest`); :mod:`brainfm.data.phantom` writes such datasets from the ICBM152
template so the default run needs no patient data.
"""
