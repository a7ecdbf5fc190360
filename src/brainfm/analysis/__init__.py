"""Representation analyses on frozen features: kNN probing, CKA, reference similarity maps."""
