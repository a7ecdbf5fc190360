"""Datasets: manifests, subject-disjoint splits, real datasets' registry entries, and the phantom cohort.

Everything downstream learns about images only through a dataset's validated ``manifest.parquet``
(:mod:`brainfm.data.manifest`); :mod:`brainfm.data.datasets` builds one from a real dataset's root
and its registry entry, and :mod:`brainfm.data.phantom` writes such datasets from the ICBM152
template so the default run needs no patient data.
"""
