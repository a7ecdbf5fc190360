"""brainfm: reproduce the BrainDINO frozen-encoder benchmark for brain MRI foundation models.

The package is organised along the data flow of the workflow (see README, "Architecture"):
``data`` (datasets, manifests, phantom cohort, splits) -> ``preprocess`` (paper protocol, sharded
stores) -> ``ssl`` (pretraining recipes) -> ``models`` (encoder registry, checkpoints) ->
``features`` (frozen extraction, feature store) -> ``tasks`` (heads, ratios, seeds) -> ``stats`` ->
``report`` (figures and tables).
"""

__version__ = "0.1.0"
