"""Representation analyses on frozen features: kNN probing, CKA, reference similarity maps.

Workflow steps: :func:`brainfm.analysis.knn.knn_probe` (rule ``knn_probe``) and
:func:`brainfm.analysis.cka.cka` (rule ``cka``).
"""
