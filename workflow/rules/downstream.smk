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
