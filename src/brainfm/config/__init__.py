"""The configuration model shared by the workflow and the package (importable without torch).

``load_config("config/config.yaml")`` validates a config against ``schema.yaml`` (the one place
values are typed and defaulted), builds typed, frozen specs for every section and checks every
cross-reference once; :mod:`workflow/rules/common.smk` and the ``brainfm`` CLI both read it. Each
spec round-trips through ``to_json``/``from_json``, which is how a rule hands a section to its
command.
"""

from brainfm.config.backbones import BackboneSpec, FeaturesSpec, WeightsRef
from brainfm.config.datasets import DatasetSpec, PhantomSpec
from brainfm.config.finetune import FinetuneSpec
from brainfm.config.layout import ResultsLayout
from brainfm.config.model import Config, UserWeights, load_config
from brainfm.config.outputs import AnalysisSpec, CkaSpec, ReportSpec, StatsSpec
from brainfm.config.perturbations import IDENTITY, PAPER_GRIDS, PerturbationSetting, PerturbationsSpec, canonical_kind
from brainfm.config.preprocess import PRODUCTS, PreprocessSpec, ProtocolSpec
from brainfm.config.pretrain import RECIPES, PretrainSpec, Recipe
from brainfm.config.segmentation import SegmentationBackbone, SegmentationSpec
from brainfm.config.spec import Spec, as_json, read_json_arg
from brainfm.config.tasks import KINDS, HeadSpec, SplitSpec, TaskSpec

__all__ = [
    "load_config", "Config", "UserWeights", "ResultsLayout", "Spec", "as_json", "read_json_arg",
    "DatasetSpec", "PhantomSpec", "PreprocessSpec", "ProtocolSpec", "PRODUCTS",
    "PretrainSpec", "Recipe", "RECIPES", "BackboneSpec", "FeaturesSpec", "WeightsRef",
    "TaskSpec", "SplitSpec", "HeadSpec", "KINDS", "FinetuneSpec",
    "PerturbationsSpec", "PerturbationSetting", "IDENTITY", "PAPER_GRIDS", "canonical_kind",
    "StatsSpec", "AnalysisSpec", "CkaSpec", "ReportSpec", "SegmentationSpec", "SegmentationBackbone",
]
