# Task heads on cached features (package: brainfm.tasks): one job per (task, backbone); every
# ratio, seed and CV fold of that cell trains together as one vectorised head bank (identical to
# training each head alone), so a backbone or a task can be rerun on its own without paying a
# process start per head. Full fine-tuning of encoder + head uses the same folds and subsets.


rule fit_heads:
    wildcard_constraints:
        task=_alt(CFG.head_tasks()),
    input:
        unpack(task_inputs),
    output:
        directory(L.runs("{task}", "{backbone}")),
    log:
        L.log("tasks", "{task}", "{backbone}", "fit"),
    benchmark:
        L.benchmark("fit_heads", "{task}", "{backbone}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
    threads: 1
    group:
        "heads"
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm fit-heads --task {params.task:q} --features {input.features} --manifest {input.manifest}"
        " --backbone {wildcards.backbone} --pretrain-manifests {input.pretrain} --out {output} > {log} 2>&1"


rule scan_leakage:
    """No test scan of a task may be a pretraining scan, whatever collection it came from (fingerprints)."""
    wildcard_constraints:
        task=_alt(list(CFG.tasks)),
    input:
        unpack(scan_leakage_inputs),
    output:
        L.scan_leakage("{task}"),
    log:
        L.log("tasks", "{task}", "scan_leakage"),
    benchmark:
        L.benchmark("scan_leakage", "{task}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm scan-leakage --task {params.task:q} --manifest {input.manifest} --fingerprints {input.fingerprints}"
        " --pretrain-fingerprints {input.pretrain} --out {output} > {log} 2>&1"


rule finetune:
    """Encoder and head trained jointly on the frozen protocol's folds and subsets (Supp. Table 6)."""
    wildcard_constraints:
        task=_alt(CFG.finetune.tasks),
        backbone=_alt(CFG.finetune_backbones()),
    input:
        unpack(finetune_inputs),
    output:
        directory(L.finetune_runs("{task}", "{backbone}")),
    log:
        L.log("tasks", "{task}", "{backbone}", "finetune"),
    benchmark:
        L.benchmark("finetune", "{task}", "{backbone}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
        settings=CFG.finetune.to_json(),
        backbone=lambda wc: CFG.backbones[wc.backbone].to_json(),
        store=lambda wc: L.store(CFG.tasks[wc.task].dataset),
        device=CFG.device,
        precision=CFG.precision,
    threads: CFG.finetune.threads
    resources:
        gpu=resources_of(CFG.finetune, "gpu"),
        mem_mb=resources_of(CFG.finetune, "mem_mb"),
        runtime=resources_of(CFG.finetune, "runtime"),
    priority: PRIORITY["finetune"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm finetune --task {params.task:q} --settings {params.settings:q} --backbone {params.backbone:q}"
        " --store {params.store} --manifest {input.manifest} --pretrain-manifests {input.pretrain}"
        " --device {params.device} --precision {params.precision} --out {output} > {log} 2>&1"
