"""Frozen feature extraction and the feature store every downstream head reads."""

from brainfm.features.extract import central_indices, extract_features
from brainfm.features.store import FeatureStore, fuse_modalities, write_feature_dir

__all__ = ["extract_features", "FeatureStore", "fuse_modalities", "central_indices", "write_feature_dir"]
