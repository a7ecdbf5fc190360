"""Where every artifact of a run lives under the results directory: the one map of the layout.

Rules, the CLI and library code ask this class for paths; nothing else spells a results path.
Arguments may be Snakemake wildcards (``layout.features("{backbone}", "{dataset}")``) so the
same method gives both a rule's output pattern and a concrete target.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResultsLayout"]


@dataclass(frozen=True)
class ResultsLayout:
    root: str = "results"

    def _p(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # data and preprocessing
    def manifest(self, dataset: str) -> str:
        return self._p("data", dataset, "manifest.parquet")

    def dataset_dir(self, dataset: str) -> str:
        return self._p("data", dataset)

    def dataset_check(self, dataset: str) -> str:
        return self._p("data", dataset, "check.json")

    def preprocessed(self, dataset: str, perturbation: str | None = None) -> str:
        """Directory of a dataset's stores; its ``report.json`` is the rule's sentinel."""
        if perturbation:
            return self._p("perturbed", perturbation, "preprocessed", dataset)
        return self._p("preprocessed", dataset)

    def preprocess_report(self, dataset: str, perturbation: str | None = None) -> str:
        return f"{self.preprocessed(dataset, perturbation)}/report.json"

    def store(self, dataset: str, product: str = "downstream", perturbation: str | None = None) -> str:
        """A sharded store: ``downstream`` volumes, ``downstream_masks`` or ``pretrain`` slices."""
        return f"{self.preprocessed(dataset, perturbation)}/{product}"

    # pretraining and features
    def pretrain_dir(self, run: str) -> str:
        return self._p("pretrain", run)

    def pretrain_weights(self, run: str) -> str:
        return self._p("pretrain", run, "weights.pth")

    def pretrain_summary(self, run: str) -> str:
        return self._p("pretrain", run, "summary.json")

    def pretrain_work(self, run: str) -> str:
        """Resume checkpoints: outside the declared outputs, so a failed job keeps them."""
        return self._p("pretrain", run, "work")

    def features(self, backbone: str, dataset: str, perturbation: str | None = None) -> str:
        if perturbation:
            return self._p("perturbed", perturbation, "features", backbone, dataset)
        return self._p("features", backbone, dataset)

    # tasks
    def runs(self, task: str, backbone: str) -> str:
        return self._p("tasks", task, backbone, "runs")

    def scan_leakage(self, task: str) -> str:
        """The record that no test scan of ``task`` is a pretraining scan (image fingerprints)."""
        return self._p("tasks", task, "scan_leakage.json")

    def finetune_runs(self, task: str, backbone: str) -> str:
        return self._p("tasks", task, backbone, "finetune")

    def knn(self, task: str, backbone: str) -> str:
        return self._p("tasks", task, backbone, "knn.parquet")

    def perturbed_results(self, task: str, backbone: str) -> str:
        return self._p("perturbed", "results", task, f"{backbone}.parquet")

    # segmentation (nnU-Net v2): one prepared benchmark per dataset, one folder per training job
    def segmentation_benchmark(self, benchmark: str) -> str:
        """A benchmark's nnU-Net tree (raw, preprocessed; its ``prepared.json`` is the rule's sentinel)."""
        return self._p("segmentation", benchmark, "nnunet")

    def segmentation_prepared(self, benchmark: str) -> str:
        return f"{self.segmentation_benchmark(benchmark)}/prepared.json"

    def segmentation_run(self, benchmark: str, backbone: str, ratio: str | float, seed: str | int) -> str:
        """One job's folder (dice.parquet, run.json, predictions/); ``ratio`` as in ``ratio~0.1``."""
        r = ratio if isinstance(ratio, str) else f"{ratio:g}"
        return self._p("segmentation", benchmark, "runs", backbone, f"ratio~{r}", f"seed~{seed}")

    def segmentation_finetune_run(self, benchmark: str, backbone: str, ratio: str | float, seed: str | int) -> str:
        """A full fine-tuning job's folder (as :meth:`segmentation_run`; Supp. Table 6)."""
        r = ratio if isinstance(ratio, str) else f"{ratio:g}"
        return self._p("segmentation", benchmark, "finetune", backbone, f"ratio~{r}", f"seed~{seed}")

    def segmentation_dice(self, benchmark: str, backbone: str, ratio: str | float, seed: str | int) -> str:
        return f"{self.segmentation_run(benchmark, backbone, ratio, seed)}/dice.parquet"

    def segmentation_perturbed(self, benchmark: str, backbone: str) -> str:
        """Dice per region and perturbation setting of a backbone's full-data model (Fig. 5 rows)."""
        return self._p("segmentation", benchmark, "perturbed", f"{backbone}.parquet")

    def perturbed_predictions(self, task: str, backbone: str) -> str:
        """Per-item pooled predictions behind ``perturbed_results`` (the pairwise tests' input)."""
        return self._p("perturbed", "results", task, f"{backbone}_predictions.parquet")

    # statistics, analyses, tables, figures
    def stats_dir(self, task: str) -> str:
        return self._p("stats", task)

    def stats(self, task: str, name: str) -> str:
        return self._p("stats", task, name)

    def analysis(self, name: str) -> str:
        return self._p("analysis", name)

    def table(self, name: str) -> str:
        return self._p("tables", f"{name}.md")

    def figure(self, name: str) -> str:
        return self._p("figures", f"{name}.png")

    def log(self, *parts: str) -> str:
        return self._p("logs", *parts[:-1], f"{parts[-1]}.log")

    def benchmark(self, *parts: str) -> str:
        return self._p("benchmarks", *parts[:-1], f"{parts[-1]}.tsv")

    def report(self) -> str:
        return self._p("report.html")
