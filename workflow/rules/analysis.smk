# Representation analyses on frozen features (paper §4.6; package: brainfm.analysis): kNN
# probing (a task kind, so it shares the task's splits and leakage checks), layer-wise CKA and
# reference-point similarity maps (Fig. 6a).


rule knn_probe:
    wildcard_constraints:
        task=_alt(CFG.knn_tasks()),
    input:
        unpack(task_inputs),
    output:
        L.knn("{task}", "{backbone}"),
    log:
        L.log("tasks", "{task}", "{backbone}", "knn"),
    benchmark:
        L.benchmark("knn_probe", "{task}", "{backbone}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
    threads: 1
    group:
        "heads"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm knn-probe --task {params.task:q} --features {input.features} --manifest {input.manifest}"
        " --backbone {wildcards.backbone} --pretrain-manifests {input.pretrain} --out {output} > {log} 2>&1"


rule cka:
    input:
        lambda wc: [L.features(b, wc.dataset) for b in CFG.backbones],
    output:
        L.analysis("cka_{dataset}.parquet"),
    log:
        L.log("analysis", "cka_{dataset}"),
    benchmark:
        L.benchmark("cka", "{dataset}")
    params:
        reference=CFG.stats.reference,
        backbones=list(CFG.backbones),
        modalities=CFG.analysis.cka.modalities or [],
        depth=CFG.analysis.cka.depth_labels,
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm cka --reference {params.reference} --backbones {params.backbones} --features {input}"
        " --modalities {params.modalities} --depth-labels {params.depth} --out {output} > {log} 2>&1"


rule similarity_maps:
    input:
        store=lambda wc: L.preprocess_report(CFG.analysis.similarity.dataset),
        weights=lambda wc: CFG.backbone_weights(wc.backbone),
    output:
        auc=L.analysis("similarity/{backbone}.parquet"),
        maps=L.analysis("similarity/{backbone}.npz"),
    log:
        L.log("analysis", "similarity_{backbone}"),
    benchmark:
        L.benchmark("similarity_maps", "{backbone}")
    params:
        backbone=lambda wc: CFG.backbones[wc.backbone].to_json(),
        store=lambda wc: L.store(CFG.analysis.similarity.dataset, "downstream"),
        masks=lambda wc: L.store(CFG.analysis.similarity.dataset, "downstream_masks"),
        modality=CFG.analysis.similarity.modality,
        n_cases=CFG.analysis.similarity.n_cases,
        references=list(CFG.analysis.similarity.references),
        device=CFG.device,
    threads: 1
    resources:
        gpu=resources_of(CFG.features, "gpu"),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm similarity-maps --backbone {params.backbone:q} --store {params.store} --masks {params.masks}"
        " --modality {params.modality} --n-cases {params.n_cases} --references {params.references}"
        " --device {params.device} --out {output.auc} > {log} 2>&1"


rule similarity_report:
    input:
        [L.analysis(f"similarity/{b}.parquet") for b in CFG.similarity_backbones()],
        [L.analysis(f"similarity/{b}.npz") for b in CFG.similarity_backbones()],
    output:
        tidy=L.analysis("similarity_auc.parquet"),
        table=report(
            L.table("similarity"),
            caption="../report/similarity.rst",
            category="Tables",
            subcategory="representation",
        ),
        figure=report(
            L.figure("similarity"),
            caption="../report/similarity.rst",
            category="Figures",
            subcategory="representation",
        ),
    log:
        L.log("analysis", "similarity_report"),
    benchmark:
        L.benchmark("similarity_report", "all")
    params:
        inputs=[L.analysis(f"similarity/{b}.parquet") for b in CFG.similarity_backbones()],
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm similarity-report --inputs {params.inputs} --tidy {output.tidy} --table {output.table}"
        " --figure {output.figure} --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"
