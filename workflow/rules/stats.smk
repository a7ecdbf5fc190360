# Statistics per task (paper §4.7): comparisons against the reference backbone, tables in CSV,
# Markdown and LaTeX. One job per task; small and numerous on a cluster, so they are grouped.


rule task_stats:
    wildcard_constraints:
        task=_alt(head_tasks()),
    input:
        lambda wc: run_dirs(wc.task),
    output:
        comparison="results/stats/{task}/comparison.parquet",
        table=report(
            "results/tables/{task}.md",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "table"},
        ),
        figure=report(
            "results/figures/ratio_{task}.png",
            caption="../report/ratio.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "metric vs label ratio"},
        ),
    log:
        "results/logs/stats/{task}.log",
    benchmark:
        "results/benchmarks/stats/{task}.tsv"
    params:
        spec=lambda wc: task_json(wc.task),
        outdir=lambda wc: f"results/stats/{wc.task}",
        reference=config["stats"]["reference"],
        n_boot=config["stats"]["n_boot"],
        seed=config["stats"]["seed"],
        labels=to_json(backbone_labels()),
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm stats --task {wildcards.task} --spec {params.spec:q} --runs {input}"
        " --out-dir {params.outdir} --table {output.table} --figure {output.figure}"
        " --reference {params.reference} --n-boot {params.n_boot} --seed {params.seed}"
        " --labels {params.labels:q} > {log} 2>&1"


rule knn_stats:
    wildcard_constraints:
        task=_alt(knn_tasks()),
    input:
        lambda wc: knn_outputs(wc.task),
    output:
        stats="results/stats/{task}/knn.parquet",
        table=report(
            "results/tables/{task}.md",
            caption="../report/knn.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "table"},
        ),
        figure=report(
            "results/figures/knn_{task}.png",
            caption="../report/knn.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "kNN accuracy vs k"},
        ),
    log:
        "results/logs/stats/{task}.log",
    benchmark:
        "results/benchmarks/stats/{task}.tsv"
    params:
        outdir=lambda wc: f"results/stats/{wc.task}",
        reference=config["stats"]["reference"],
        n_boot=config["stats"]["n_boot"],
        seed=config["stats"]["seed"],
        labels=to_json(backbone_labels()),
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm knn-report --task {wildcards.task} --inputs {input} --out-dir {params.outdir}"
        " --table {output.table} --figure {output.figure} --reference {params.reference}"
        " --n-boot {params.n_boot} --seed {params.seed} --labels {params.labels:q} > {log} 2>&1"



rule strata_stats:
    """Age strata at full supervision (Fig. 3k, 3m): sign-flip / bootstrap per stratum, Holm within strata."""
    wildcard_constraints:
        task=_alt(strata_tasks()),
    input:
        lambda wc: run_dirs(wc.task),
    output:
        stats="results/stats/{task}/strata.parquet",
        table=report(
            "results/tables/{task}_strata.md",
            caption="../report/strata.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "age strata"},
        ),
        figure=report(
            "results/figures/strata_{task}.png",
            caption="../report/strata.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "age strata"},
        ),
    log:
        "results/logs/stats/{task}_strata.log",
    params:
        spec=lambda wc: task_json(wc.task),
        outdir=lambda wc: f"results/stats/{wc.task}",
        reference=config["stats"]["reference"],
        n_boot=config["stats"]["n_boot"],
        seed=config["stats"]["seed"],
        labels=to_json(backbone_labels()),
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm strata --task {wildcards.task} --spec {params.spec:q} --runs {input}"
        " --out-dir {params.outdir} --table {output.table} --figure {output.figure}"
        " --reference {params.reference} --n-boot {params.n_boot} --seed {params.seed}"
        " --labels {params.labels:q} > {log} 2>&1"


rule km_stats:
    """Kaplan-Meier risk groups per ratio and backbone with log-rank p (Fig. 4)."""
    wildcard_constraints:
        task=_alt(survival_tasks()),
    input:
        lambda wc: run_dirs(wc.task),
    output:
        stats="results/stats/{task}/km.parquet",
        table=report(
            "results/tables/{task}_km.md",
            caption="../report/km.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "Kaplan-Meier"},
        ),
        figure=report(
            "results/figures/km_{task}.png",
            caption="../report/km.rst",
            category="Figures",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "Kaplan-Meier"},
        ),
    log:
        "results/logs/stats/{task}_km.log",
    params:
        outdir=lambda wc: f"results/stats/{wc.task}",
        reference=config["stats"]["reference"],
        labels=to_json(backbone_labels()),
    group:
        "stats"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm km --task {wildcards.task} --runs {input} --out-dir {params.outdir} --table {output.table}"
        " --figure {output.figure} --reference {params.reference} --labels {params.labels:q} > {log} 2>&1"
