"""The whole configuration as typed, frozen specs, with every cross-reference checked once.

:func:`load_config` reads a YAML file (or takes the dict Snakemake loaded), validates it against
the schema (filling defaults), builds one spec per section, checks that every name a section
refers to exists (datasets of a run, backbones of a task, ``pretrain:<run>`` weights...), and
resolves what depends on several sections: a backbone's weights file and layers, a task's
inherited ratios/seeds/head and backbones, a subset's cohort. The workflow and the CLI both
work from the resulting :class:`Config`; nothing downstream re-validates or re-defaults a value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from brainfm.config.backbones import BackboneSpec, FeaturesSpec, WeightsRef
from brainfm.config.datasets import DatasetSpec, PhantomSpec
from brainfm.config.finetune import FinetuneSpec
from brainfm.config.layout import ResultsLayout
from brainfm.config.outputs import AnalysisSpec, ReportSpec, StatsSpec
from brainfm.config.perturbations import PerturbationSetting, PerturbationsSpec
from brainfm.config.preprocess import PreprocessSpec
from brainfm.config.pretrain import RECIPES, PretrainSpec
from brainfm.config.schema import load_yaml, validate
from brainfm.config.segmentation import SegmentationSpec
from brainfm.config.tasks import HeadSpec, TaskSpec
from brainfm.errors import ConfigError

__all__ = ["Config", "load_config", "UserWeights"]


@dataclass(frozen=True)
class UserWeights:
    """A weights file the user must supply: the config key naming it and the encoder it feeds."""

    path: str
    key: str
    encoder: str


@dataclass(frozen=True)
class Config:
    source: str
    values: dict[str, Any]  # the validated config with every default filled in
    run_name: str
    device: str
    precision: str  # auto | fp32 | bf16, resolved per job by brainfm.device.resolve_precision
    seed: int
    layout: ResultsLayout
    datasets: dict[str, DatasetSpec]
    phantom: PhantomSpec
    preprocess: PreprocessSpec
    pretrain: dict[str, PretrainSpec]
    backbones: dict[str, BackboneSpec]
    features: FeaturesSpec
    head: HeadSpec
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    tasks: dict[str, TaskSpec]
    finetune: FinetuneSpec
    perturbations: PerturbationsSpec
    analysis: AnalysisSpec
    stats: StatsSpec
    report: ReportSpec
    segmentation: SegmentationSpec

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> Config:
        v = validate(_with_registry_splits(copy.deepcopy(dict(raw))), source=source)
        layout = ResultsLayout(v["results"])

        def section(spec_cls: Any, key: str) -> Any:
            return spec_cls._build(v[key], name=None, source=source, where=key)

        datasets = {n: DatasetSpec._build(d, name=n, source=source, where=f"datasets.{n}")
                    for n, d in v["datasets"].items()}
        _check_datasets(datasets, v, source)
        datasets = {n: replace(d, cohort=_cohort(n, datasets)) for n, d in datasets.items()}

        pretrain = {}
        for n, d in v["pretrain"].items():
            missing = [ds for ds in d["datasets"] if ds not in datasets]
            if missing:
                raise ConfigError(f"{source}: pretrain.{n}.datasets: {missing[0]!r} is not declared under datasets")
            init = _resolve_weights(WeightsRef.parse(d["init"], f"{source}: pretrain.{n}.init"), v["pretrain"],
                                    layout, f"{source}: pretrain.{n}.init")
            spec = PretrainSpec._build({**d, "init": init[0]}, name=n, source=source, where=f"pretrain.{n}")
            pretrain[n] = replace(spec, init_run=init[1])

        features = section(FeaturesSpec, "features")
        backbones = {}
        for n, d in v["backbones"].items():
            where = f"{source}: backbones.{n}.weights"
            path, run = _resolve_weights(WeightsRef.parse(d["weights"], where), v["pretrain"], layout, where)
            d = {**d, "weights": path, "layers": d.get("layers", list(features.layers))}
            backbones[n] = replace(BackboneSpec._build(d, name=n, source=source, where=f"backbones.{n}"),
                                   pretrain_run=run)

        head = section(HeadSpec, "head")
        tasks = {}
        for n, d in v["tasks"].items():
            if d["dataset"] not in datasets:
                raise ConfigError(f"{source}: tasks.{n}.dataset: {d['dataset']!r} is not declared under datasets")
            unknown = [b for b in d.get("backbones", []) if b not in backbones]
            if unknown:
                raise ConfigError(f"{source}: tasks.{n}.backbones: {unknown[0]!r} is not declared under backbones")
            tasks[n] = TaskSpec.from_config(n, d, {"ratios": v["ratios"], "seeds": v["seeds"], "head": v["head"],
                                                "validation": v["validation"]},
                                            backbones=tuple(d.get("backbones") or backbones), source=source)
        for n, t in tasks.items():
            if t.split_from:
                ref = tasks.get(t.split_from)
                if ref is None or ref.dataset != t.dataset or ref.split_from or t.split_from == n:
                    raise ConfigError(f"{source}: tasks.{n}.split_from: {t.split_from!r} must be another task on "
                                      f"dataset {t.dataset!r} that has no split_from itself")
                tasks[n] = replace(t, split_reference=ref.to_dict())
        for n, d in datasets.items():
            if d.source == "subset":
                if d.train_of not in tasks:
                    raise ConfigError(f"{source}: datasets.{n}.train_of: {d.train_of!r} is not a task")
                if tasks[d.train_of].dataset != d.of:
                    raise ConfigError(f"{source}: datasets.{n}: task {d.train_of!r} does not use dataset {d.of!r}")

        finetune = section(FinetuneSpec, "finetune")
        for t in finetune.tasks:
            if t not in tasks or tasks[t].kind not in ("classification", "regression"):
                raise ConfigError(f"{source}: finetune.tasks: {t!r} is not a classification or regression task")
        _check_names(finetune.backbones, backbones, f"{source}: finetune.backbones", "a backbone")

        v["perturbations"]["backbones"] = v["perturbations"]["backbones"] or list(backbones)
        perturbations = section(PerturbationsSpec, "perturbations")
        _check_names(perturbations.tasks, tasks, f"{source}: perturbations.tasks", "a task")
        _check_names(perturbations.backbones, backbones, f"{source}: perturbations.backbones", "a backbone")

        analysis = section(AnalysisSpec, "analysis")
        _check_names(analysis.cka.datasets, datasets, f"{source}: analysis.cka.datasets", "a dataset")
        sim = analysis.similarity
        if sim.dataset is not None:
            _check_names([sim.dataset], datasets, f"{source}: analysis.similarity.dataset", "a dataset")
        _check_names(sim.backbones, backbones, f"{source}: analysis.similarity.backbones", "a backbone")
        for b in sim.backbones:
            if _is_reference(backbones[b].encoder):
                raise ConfigError(f"{source}: analysis.similarity.backbones: {b!r} is a reference row "
                                  f"({backbones[b].encoder}), which has no patch tokens to compare")
        stats = section(StatsSpec, "stats")
        _check_names([stats.reference], backbones, f"{source}: stats.reference", "a backbone")
        _check_controls(stats.controls, backbones, source)

        seg = v["segmentation"]
        seg.setdefault("ratios", list(v["ratios"]))
        seg.setdefault("seeds", list(v["seeds"]))
        segmentation = section(SegmentationSpec, "segmentation")
        _check_segmentation(segmentation, datasets, backbones, source)

        return cls(source=source, values=v, run_name=v["run_name"], device=v["device"],
                   precision=v["precision"], seed=v["seed"],
                   layout=layout, datasets=datasets, phantom=section(PhantomSpec, "phantom"),
                   preprocess=PreprocessSpec._build(v["preprocess"], name=None, source=source, where="preprocess"),
                   pretrain=pretrain, backbones=backbones, features=features, head=head,
                   ratios=tuple(float(r) for r in v["ratios"]), seeds=tuple(v["seeds"]), tasks=tasks,
                   finetune=finetune, perturbations=perturbations, analysis=analysis, stats=stats,
                   report=section(ReportSpec, "report"), segmentation=segmentation)

    # ------------------------------------------------------------------ datasets and stores
    def pretrain_datasets(self) -> list[str]:
        return sorted({d for run in self.pretrain.values() for d in run.datasets})

    def task_datasets(self) -> list[str]:
        return sorted({t.dataset for t in self.tasks.values()})

    def datasets_of(self, source: str) -> list[str]:
        return sorted(n for n, d in self.datasets.items() if d.source == source)

    def products(self, dataset: str) -> tuple[str, ...]:
        """The stores the preprocessing of ``dataset`` must write (tasks: volumes; runs: their recipe's)."""
        out = set()
        if dataset in self.task_datasets() or dataset == self.analysis.similarity.dataset:
            out.add("downstream")
        for run in self.pretrain.values():
            if dataset in run.datasets:
                out.add(RECIPES[run.recipe].product)
        return tuple(sorted(out)) or ("downstream",)

    def pretrain_manifests_for(self, dataset: str) -> list[str]:
        """Manifests of pretraining datasets of the same cohort: none of their subjects may be tested."""
        cohort = self.datasets[dataset].cohort
        return sorted({self.layout.manifest(d) for d in self.pretrain_datasets()
                       if self.datasets[d].cohort == cohort})

    def similarity_backbones(self) -> list[str]:
        """Backbones of the similarity maps (Fig. 6a); none while the analysis is off."""
        sim = self.analysis.similarity
        if sim.dataset is None:
            return []
        return list(sim.backbones or [b for b, spec in self.backbones.items() if not _is_reference(spec.encoder)])

    def needs_central_patches(self, dataset: str) -> bool:
        return any(t.dataset == dataset and t.features == "patch_central" for t in self.tasks.values())

    # ------------------------------------------------------------------ weights
    def backbone_weights(self, backbone: str) -> list[str]:
        w = self.backbones[backbone].weights
        return [w] if w else []

    def user_weights(self) -> dict[str, UserWeights]:
        """Files the user must supply (baseline weights, pretraining inits), by path."""
        out = {}
        for n, run in self.pretrain.items():
            if run.init and not run.init_run:
                out[run.init] = UserWeights(run.init, f"pretrain.{n}.init", RECIPES[run.recipe].encoder)
        for n, bb in self.backbones.items():
            if bb.weights and not bb.pretrain_run:
                out[bb.weights] = UserWeights(bb.weights, f"backbones.{n}.weights", bb.encoder)
        return out

    def labels(self) -> dict[str, str]:
        return {n: b.label for n, b in self.backbones.items()}

    # ------------------------------------------------------------------ tasks
    def head_tasks(self) -> list[str]:
        return [t for t, s in self.tasks.items() if not s.is_knn]

    def knn_tasks(self) -> list[str]:
        return [t for t, s in self.tasks.items() if s.is_knn]

    def strata_tasks(self) -> list[str]:
        return [t for t in self.head_tasks() if self.tasks[t].strata]

    def survival_tasks(self) -> list[str]:
        return [t for t in self.head_tasks() if self.tasks[t].kind == "survival"]

    def finetune_backbones(self) -> tuple[str, ...]:
        """Backbones with a Supp. Table 6 (fine-tuned on some task or segmentation benchmark)."""
        if self.finetune.tasks:
            return self.finetune.backbones
        segmented = {b for _, b, _, _ in self.segmentation_finetune_cells()}
        return tuple(b for b in self.finetune.backbones if b in segmented)

    def perturbation_settings(self) -> list[PerturbationSetting]:
        return self.perturbations.settings

    # ------------------------------------------------------------------ segmentation
    def segmentation_backbones(self) -> list[str]:
        return list(self.segmentation.backbones) if self.segmentation.enabled else []

    def segmentation_benchmarks(self) -> list[str]:
        return list(self.segmentation.benchmarks) if self.segmentation.enabled else []

    def segmentation_pretrain_manifests(self, benchmark: str) -> list[str]:
        """Pretraining manifests a benchmark's test subjects must avoid: its cohort's, plus pretraining
        subsets pooled from it through a union (their subjects carry a ``<benchmark>:`` prefix)."""
        pooled = {self.layout.manifest(d) for d in self.pretrain_datasets()
                  if self.datasets[d].source == "subset" and self.datasets[d].source_dataset == benchmark}
        return sorted(set(self.pretrain_manifests_for(benchmark)) | pooled)

    def segmentation_finetune_cells(self) -> list[tuple[str, str, float, int]]:
        """Supp. Table 6's segmentation jobs, (benchmark, backbone, ratio, seed) with the encoder trained:
        the ``finetune:`` backbones that are segmentation backbones, at its ratios the segmentation grid
        also runs (each beside its frozen job), every segmentation seed."""
        seg = self.segmentation
        if not (seg.enabled and seg.finetune):
            return []
        backbones = [b for b in self.finetune.backbones if b in seg.backbones]
        ratios = [r for r in self.finetune.ratios if r in seg.ratios]
        return [(bm, b, r, s) for bm in seg.benchmarks for b in backbones for r in ratios for s in seg.seeds]

    def segmentation_perturbed(self) -> list[tuple[str, str]]:
        """(benchmark, backbone) pairs scored on perturbed test images: the perturbation grid's backbones
        that are segmentation backbones, on ``segmentation.perturbation_benchmarks``."""
        if not (self.segmentation.enabled and self.perturbation_settings()):
            return []
        backbones = [b for b in self.perturbations.backbones if b in self.segmentation.backbones]
        return [(bm, b) for bm in self.segmentation.perturbation_benchmarks for b in backbones]


def _check_names(names: Any, known: Mapping[str, Any], where: str, what: str) -> None:
    for n in names:
        if n not in known:
            raise ConfigError(f"{where}: {n!r} is not {what} of this config (known: {', '.join(sorted(known))})")


def _check_controls(controls: Mapping[str, str], backbones: Mapping[str, BackboneSpec], source: str) -> None:
    """A control is an untrained backbone of this config, paired with a different, pretrained one."""
    _check_names(controls, backbones, f"{source}: stats.controls", "a backbone")
    _check_names(controls.values(), backbones, f"{source}: stats.controls", "a backbone")
    for b, c in controls.items():
        where = f"{source}: stats.controls.{b}"
        if b == c:
            raise ConfigError(f"{where}: a backbone cannot be its own control")
        if _is_reference(backbones[b].encoder) or _is_reference(backbones[c].encoder):
            raise ConfigError(f"{where}: reference rows ({b!r} -> {c!r}) have no random initialisation to compare")
        if backbones[c].weights is not None:
            raise ConfigError(f"{where}: the control {c!r} loads weights ({backbones[c].weights}); a control is the "
                              "same architecture at random initialisation (weights: null)")


def _check_datasets(datasets: Mapping[str, DatasetSpec], v: Mapping[str, Any], source: str) -> None:
    for n, d in datasets.items():
        for p in d.parts:
            if p not in datasets:
                raise ConfigError(f"{source}: datasets.{n}.parts: {p!r} is not declared under datasets")
        if d.source == "union" and len(d.parts) < 2:
            raise ConfigError(f"{source}: datasets.{n}: a union needs 'parts' (two datasets or more)")
        if d.source == "subset" and (d.of not in datasets or not d.train_of):
            raise ConfigError(f"{source}: datasets.{n}: a subset needs 'of' (a dataset) and 'train_of' (a task)")


#: registry split keys a task inherits (the registry's ``stratify`` is the task's own ``stratify`` key)
_REGISTRY_SPLIT_KEYS = ("type", "test_fraction", "n_test", "n_splits", "seed")


def registry_split(dataset: str, datasets: Mapping[str, Any]) -> dict[str, Any]:
    """The split rule of a dataset's registry entry (a union: its parts' common rule), as task split keys.

    Phantom and subset datasets, entries without a holdout/cv rule, unions whose parts disagree
    and names with no registry entry give ``{}`` (the schema's defaults then apply).
    """
    d = datasets.get(dataset)
    if not isinstance(d, Mapping):
        return {}
    if d.get("source") == "union":
        rules = [registry_split(p, datasets) for p in d.get("parts") or ()]
        return rules[0] if rules and all(r == rules[0] for r in rules) else {}
    if d.get("source") not in ("local", "download"):
        return {}
    split = _entry_split(str(d.get("registry") or dataset))
    if not isinstance(split, Mapping) or split.get("type") not in ("holdout", "cv"):
        return {}
    return {k: split[k] for k in _REGISTRY_SPLIT_KEYS if k in split}


def _entry_split(name: str) -> Any:
    """The ``split`` mapping of registry entry ``name`` (None when there is no such entry).

    Searched in the order of :func:`brainfm.data.datasets.catalog.search_path` but read as plain
    YAML: importing the catalog would import pandas, which loading a config must not (the entry
    itself is validated by the step that builds the dataset's manifest).
    """
    import os

    import brainfm

    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        candidates = [path]
    else:
        dirs = [Path(x) for x in os.environ.get("BRAINFM_DATASETS", "").split(os.pathsep) if x]
        dirs += [Path("config/datasets"), Path(brainfm.__file__).resolve().parent / "data" / "datasets" / "entries"]
        candidates = [dd / f"{name}{suffix}" for dd in dirs for suffix in (".yaml", ".yml")]
    for c in candidates:
        if c.is_file():
            entry = load_yaml(c.read_text())
            return entry.get("split") if isinstance(entry, Mapping) else None
    return None


def _with_registry_splits(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill each task's unset split keys from its dataset's registry entry (before schema defaults)."""
    datasets = raw.get("datasets")
    tasks = raw.get("tasks")
    if not isinstance(datasets, Mapping) or not isinstance(tasks, Mapping):
        return raw
    for task in tasks.values():
        if isinstance(task, dict) and isinstance(task.get("dataset"), str):
            rule = registry_split(task["dataset"], datasets)
            if rule:
                own = dict(task.get("split") or {})
                if own.get("type", rule["type"]) != rule["type"]:
                    rule = {}  # the task chose another kind of split: none of the registry's keys apply
                if "test_fraction" in own or "n_test" in own:
                    rule = {k: v for k, v in rule.items() if k not in ("test_fraction", "n_test")}
                task["split"] = {**rule, **own}
    return raw


def _check_segmentation(seg: SegmentationSpec, datasets: Mapping[str, DatasetSpec],
                        backbones: Mapping[str, BackboneSpec], source: str) -> None:
    """Benchmarks are datasets with a label map (registry entries); backbones are declared; batch sizes
    name configurations in use."""
    _check_names(seg.benchmarks, datasets, f"{source}: segmentation.benchmarks", "a dataset")
    _check_names(seg.backbones, backbones, f"{source}: segmentation.backbones", "a backbone")
    if bool(seg.benchmarks) != bool(seg.backbones):
        missing = "backbones" if seg.benchmarks else "benchmarks"
        raise ConfigError(f"{source}: segmentation.{missing}: none given (segmentation needs benchmarks and backbones)")
    for b in seg.benchmarks:
        if not datasets[b].is_real:  # phantom generators (importing them costs torch) are checked when preparing
            continue
        from brainfm.data.datasets.catalog import load_dataset_entry
        from brainfm.data.datasets.labelmap import LabelMap

        try:
            entry = load_dataset_entry(datasets[b].registry or b)
            if entry.raw.get("segmentation") is None:
                raise ConfigError(f"{entry.source}: no 'segmentation' label map")
            LabelMap.from_mapping(entry.raw["segmentation"], f"{entry.source}: field 'segmentation'")
        except ConfigError as exc:
            raise ConfigError(f"{source}: segmentation.benchmarks: {b!r} has no tumour label map ({exc})") from None
    _check_names(seg.perturbation_benchmarks, dict.fromkeys(seg.benchmarks),
                 f"{source}: segmentation.perturbation_benchmarks", "a segmentation benchmark")
    unused = sorted(set(seg.batch_sizes) - set(seg.configurations()))
    if unused:
        raise ConfigError(f"{source}: segmentation.batch_sizes: {unused[0]!r} is not the configuration of any "
                          f"segmentation backbone ({', '.join(seg.configurations()) or 'none'})")


def _is_reference(encoder: str) -> bool:
    """Reference rows (prior, image statistics, oracle) have no tokens or depth (brainfm.models.catalog)."""
    from brainfm.models.catalog import is_reference

    return is_reference(encoder)


def _cohort(name: str, datasets: Mapping[str, DatasetSpec]) -> str:
    d = datasets[name]
    if d.cohort:
        return d.cohort
    return _cohort(d.of, datasets) if d.source == "subset" and d.of else name


def _resolve_weights(ref: WeightsRef, runs: Mapping[str, Any], layout: ResultsLayout,
                     where: str) -> tuple[str | None, str | None]:
    """(weights file, producing run): a run's output path in the layout, or the user's file."""
    if ref.run is not None:
        if ref.run not in runs:
            raise ConfigError(f"{where}: 'pretrain:{ref.run}' names no run under pretrain")
        return layout.pretrain_weights(ref.run), ref.run
    return ref.file, None


def load_config(config: str | Path | Mapping[str, Any], *, source: str | None = None) -> Config:
    """Read and check a config file (or an already-loaded dict, naming ``source`` in errors)."""
    if isinstance(config, (str, Path)):
        import yaml

        path = Path(config)
        try:
            raw = load_yaml(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
        return Config.from_dict(raw, source or str(path))
    return Config.from_dict(config, source or "config")
