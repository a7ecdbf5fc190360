# Representation analyses on frozen features (paper §4.6; package: brainfm.analysis): kNN
# probing (a task kind, so it shares the task's splits and leakage checks) and layer-wise CKA.


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
