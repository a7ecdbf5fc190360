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
        comparisons=[L.stats(t, "comparison.parquet") for t in CFG.head_tasks()]
        + ([L.stats("segmentation", "comparison.parquet")] if CFG.segmentation.enabled else []),
        knn=[L.stats(t, "knn.parquet") for t in CFG.knn_tasks()],
        controls=[L.stats(t, "controls.parquet") for t in CFG.head_tasks()],
        training_n=[L.stats(t, "training_n.parquet") for t in CFG.head_tasks()],
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
        "brainfm summary-table --comparisons {input.comparisons} --knn {input.knn} --controls {input.controls}"
        " --training-n {input.training_n} --out {output}"
        " --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"


rule protocol_deviations:
    output:
        report(
            L.table("protocol_deviations"),
            caption="../report/protocol_deviations.rst",
            category="Tables",
            subcategory="protocol",
        ),
    log:
        L.log("report", "protocol_deviations"),
    benchmark:
        L.benchmark("protocol_deviations", "all")
    params:
        values=as_json(CFG.values),
        source=os.path.relpath(CFG.source),
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm protocol-deviations --config {params.values:q} --source {params.source:q} --out {output}"
        " > {log} 2>&1"


rule corpus_figure:
    input:
        manifests=[L.manifest(d) for d in CFG.pretrain_datasets()],
        stores=[L.preprocess_report(d) for d in CFG.pretrain_datasets()],
    output:
        table=report(L.table("corpus"), caption="../report/corpus.rst", category="Tables", subcategory="data"),
        figure=report(L.figure("corpus"), caption="../report/corpus.rst", category="Figures", subcategory="data"),
    log:
        L.log("report", "corpus"),
    benchmark:
        L.benchmark("corpus_figure", "all")
    params:
        manifests=[f"{d}={L.manifest(d)}" for d in CFG.pretrain_datasets()],
        stores=[f"{d}={L.store(d, 'pretrain')}" for d in CFG.pretrain_datasets() if "pretrain" in CFG.products(d)],
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm corpus-figure --manifests {params.manifests} --stores {params.stores} --table {output.table}"
        " --figure {output.figure} > {log} 2>&1"


rule dataset_table:
    input:
        [L.manifest(d) for d in CFG.datasets],
    output:
        report(L.table("datasets"), caption="../report/datasets.rst", category="Tables", subcategory="data"),
    log:
        L.log("report", "datasets"),
    benchmark:
        L.benchmark("dataset_table", "all")
    params:
        datasets=as_json([CFG.datasets[d].to_dict() for d in CFG.datasets]),
        manifests=[f"{d}={L.manifest(d)}" for d in CFG.datasets],
        roles=as_json(dataset_roles()),
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm dataset-table --datasets {params.datasets:q} --manifests {params.manifests}"
        " --roles {params.roles:q} --table {output} > {log} 2>&1"


rule composite_figure:
    input:
        [L.stats(t, "comparison.parquet") for t in CFG.head_tasks()],
    output:
        report(L.figure("fig3"), caption="../report/fig3.rst", category="Figures", subcategory="summary"),
    log:
        L.log("report", "fig3"),
    benchmark:
        L.benchmark("composite_figure", "all")
    params:
        descriptions=as_json({t: CFG.tasks[t].description or t for t in CFG.head_tasks()}),
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm composite-figure --comparisons {input} --descriptions {params.descriptions:q}"
        " --figure {output} --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"
