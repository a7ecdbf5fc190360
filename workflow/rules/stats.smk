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

