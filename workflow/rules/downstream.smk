# Task heads on cached features: one job per (task, backbone); every ratio, seed and CV fold of
# that cell trains together as one vectorised head bank (identical to training each head alone),
# so a backbone or a task can be rerun on its own without paying a process start per head.


rule fit_heads:
    wildcard_constraints:
        task=_alt(head_tasks()),
    input:
        unpack(task_inputs),
    output:
        directory("results/tasks/{task}/{backbone}/runs"),
    log:
        "results/logs/tasks/{task}/{backbone}/fit.log",
    benchmark:
        "results/benchmarks/tasks/{task}/{backbone}.tsv"
    params:
        spec=lambda wc: task_json(wc.task),
        head=to_json(config.get("head", {})),
        pretrain=lambda wc, input: " ".join(input.pretrain) or "none",
    threads: 1
    group:
        "heads"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm fit --task {wildcards.task} --spec {params.spec:q} --head {params.head:q}"
        " --features {input.features} --manifest {input.manifest} --backbone {wildcards.backbone}"
        " --pretrain-manifests {params.pretrain} --out {output} > {log} 2>&1"


rule knn_probe:
    wildcard_constraints:
        task=_alt(knn_tasks()),
    input:
        unpack(task_inputs),
    output:
        "results/tasks/{task}/{backbone}/knn.parquet",
    log:
        "results/logs/tasks/{task}/{backbone}/knn.log",
    params:
        spec=lambda wc: task_json(wc.task),
        pretrain=lambda wc, input: " ".join(input.pretrain) or "none",
    threads: 1
    group:
        "heads"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm knn --task {wildcards.task} --spec {params.spec:q} --features {input.features}"
        " --manifest {input.manifest} --backbone {wildcards.backbone}"
        " --pretrain-manifests {params.pretrain} --out {output} > {log} 2>&1"


rule finetune:
    """Encoder and head trained jointly on the frozen protocol's folds and subsets (Supp. Table 6)."""
    wildcard_constraints:
        task=_alt(FINETUNE.get("tasks", [])),
        backbone=_alt(finetune_backbones()),
    input:
        unpack(finetune_inputs),
    output:
        directory("results/tasks/{task}/{backbone}/finetune"),
    log:
        "results/logs/tasks/{task}/{backbone}/finetune.log",
    benchmark:
        "results/benchmarks/finetune/{task}/{backbone}.tsv"
    params:
        spec=lambda wc: task_json(wc.task),
        head=to_json(config.get("head", {})),
        settings=finetune_json(),
        backbone=lambda wc: backbone_json(wc.backbone),
        weights=lambda wc, input: input.weights[0] if input.weights else "none",
        storedir=lambda wc, input: os.path.join(os.path.dirname(input.store), "downstream"),
        pretrain=lambda wc, input: " ".join(input.pretrain) or "none",
        device=config["device"],
    threads: 2
    resources:
        gpu=resources_of(FINETUNE, "gpu", 0),
        mem_mb=resources_of(FINETUNE, "mem_mb", 8000),
        runtime=resources_of(FINETUNE, "runtime", 120),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm finetune --task {wildcards.task} --spec {params.spec:q} --head {params.head:q}"
        " --settings {params.settings:q} --store {params.storedir} --manifest {input.manifest}"
        " --backbone {wildcards.backbone} --backbone-spec {params.backbone:q} --weights {params.weights}"
        " --pretrain-manifests {params.pretrain} --device {params.device} --out {output} > {log} 2>&1"
