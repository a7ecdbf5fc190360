# Statistics per task (paper §4.7; package: brainfm.stats): comparisons against the reference
# backbone, tables in CSV, Markdown and LaTeX, and the figure of each table. One job per task;
# small and numerous on a cluster, so they are grouped.


rule task_stats:
    wildcard_constraints:
        task=_alt(CFG.head_tasks()),
    input:
        lambda wc: run_dirs(wc.task),
    output:
        comparison=L.stats("{task}", "comparison.parquet"),
        controls=L.stats("{task}", "controls.parquet"),
        table=report(
            L.table("{task}"),
            caption="../report/table.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "table"},
        ),
        figure=report(
            L.figure("ratio_{task}"),
            caption="../report/ratio.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "metric vs label ratio"},
        ),
        training_n=L.stats("{task}", "training_n.parquet"),
        training_n_table=L.table("training_n_{task}"),
    log:
        L.log("stats", "{task}"),
    benchmark:
        L.benchmark("task_stats", "{task}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
        outdir=lambda wc: L.stats_dir(wc.task),
        stats=STATS,
        labels=LABELS,
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm task-stats --task {params.task:q} --runs {input} --out-dir {params.outdir}"
        " --table {output.table} --figure {output.figure} --stats {params.stats:q} --labels {params.labels:q}"
        " > {log} 2>&1"


rule knn_stats:
    wildcard_constraints:
        task=_alt(CFG.knn_tasks()),
    input:
        lambda wc: [L.knn(wc.task, b) for b in CFG.tasks[wc.task].backbones],
    output:
        stats=L.stats("{task}", "knn.parquet"),
        table=report(
            L.table("{task}"),
            caption="../report/knn.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "table"},
        ),
        figure=report(
            L.figure("knn_{task}"),
            caption="../report/knn.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "kNN accuracy vs k"},
        ),
    log:
        L.log("stats", "{task}"),
    benchmark:
        L.benchmark("knn_stats", "{task}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
        outdir=lambda wc: L.stats_dir(wc.task),
        stats=STATS,
        labels=LABELS,
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm knn-stats --task {params.task:q} --inputs {input} --out-dir {params.outdir}"
        " --table {output.table} --figure {output.figure} --stats {params.stats:q} --labels {params.labels:q}"
        " > {log} 2>&1"


rule strata_stats:
    """Age strata at full supervision (Fig. 3k, 3m): sign-flip / bootstrap per stratum, Holm within strata."""
    wildcard_constraints:
        task=_alt(CFG.strata_tasks()),
    input:
        lambda wc: run_dirs(wc.task),
    output:
        stats=L.stats("{task}", "strata.parquet"),
        table=report(
            L.table("{task}_strata"),
            caption="../report/strata.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "age strata"},
        ),
        figure=report(
            L.figure("strata_{task}"),
            caption="../report/strata.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "age strata"},
        ),
    log:
        L.log("stats", "{task}_strata"),
    benchmark:
        L.benchmark("strata_stats", "{task}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
        outdir=lambda wc: L.stats_dir(wc.task),
        stats=STATS,
        labels=LABELS,
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm strata-stats --task {params.task:q} --runs {input} --out-dir {params.outdir}"
        " --table {output.table} --figure {output.figure} --stats {params.stats:q} --labels {params.labels:q}"
        " > {log} 2>&1"


rule km_stats:
    """Kaplan-Meier risk groups per ratio and backbone with log-rank p (Fig. 4)."""
    wildcard_constraints:
        task=_alt(CFG.survival_tasks()),
    input:
        lambda wc: run_dirs(wc.task),
    output:
        stats=L.stats("{task}", "km.parquet"),
        table=report(
            L.table("{task}_km"),
            caption="../report/km.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "Kaplan-Meier"},
        ),
        figure=report(
            L.figure("km_{task}"),
            caption="../report/km.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "Kaplan-Meier"},
        ),
    log:
        L.log("stats", "{task}_km"),
    benchmark:
        L.benchmark("km_stats", "{task}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
        outdir=lambda wc: L.stats_dir(wc.task),
        stats=STATS,
        labels=LABELS,
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm km-stats --task {params.task:q} --runs {input} --out-dir {params.outdir} --table {output.table}"
        " --figure {output.figure} --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"


rule finetune_table:
    """Frozen vs fully fine-tuned encoder on the same folds, subsets and test cases (Supplementary Table 6)."""
    input:
        frozen=lambda wc: [L.runs(t, wc.backbone) for t in CFG.finetune.tasks],
        finetuned=lambda wc: [L.finetune_runs(t, wc.backbone) for t in CFG.finetune.tasks],
        seg_frozen=lambda wc: [f for f, _ in segmentation_finetune_pairs(wc.backbone)],
        seg_finetuned=lambda wc: [t for _, t in segmentation_finetune_pairs(wc.backbone)],
    output:
        report(
            L.table("finetune_{backbone}"),
            caption="../report/finetune.rst",
            category="Tables",
            subcategory="fine-tuning",
        ),
    log:
        L.log("stats", "finetune_{backbone}"),
    benchmark:
        L.benchmark("finetune_table", "{backbone}")
    params:
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm finetune-table --backbone {wildcards.backbone} --frozen {input.frozen}"
        " --finetuned {input.finetuned} --segmentation-frozen {input.seg_frozen}"
        " --segmentation-finetuned {input.seg_finetuned} --table {output} --stats {params.stats:q}"
        " --labels {params.labels:q} > {log} 2>&1"
