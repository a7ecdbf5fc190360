# Cross-task figures and the headline table (package: brainfm.report); plotting stays on the
# submit host.


rule cka_figure:
    input:
        [L.analysis(f"cka_{d}.parquet") for d in CFG.analysis.cka.datasets],
    output:
        report(
            L.figure("cka"),
            caption="../report/cka.rst",
            category="Figures",
            subcategory="representation",
        ),
    log:
        L.log("report", "cka"),
    benchmark:
        L.benchmark("cka_figure", "all")
    params:
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm cka-figure --inputs {input} --figure {output} --stats {params.stats:q}"
        " --labels {params.labels:q} > {log} 2>&1"


rule summary_table:
    input:
        comparisons=[L.stats(t, "comparison.parquet") for t in CFG.head_tasks()],
        knn=[L.stats(t, "knn.parquet") for t in CFG.knn_tasks()],
    output:
        report(
            L.table("summary"),
            caption="../report/summary.rst",
            category="Tables",
            subcategory="summary",
        ),
    log:
        L.log("report", "summary"),
    benchmark:
        L.benchmark("summary_table", "all")
    params:
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm summary-table --comparisons {input.comparisons} --knn {input.knn} --out {output}"
        " --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"
