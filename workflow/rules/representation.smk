# Representation analyses on frozen features (paper §4.6): layer-wise CKA. kNN probing is a task
# kind (rules/downstream.smk) so it shares the task's splits and leakage checks.


rule cka:
    input:
        cka_inputs,
    output:
        "results/analysis/cka_{dataset}.parquet",
    log:
        "results/logs/analysis/cka_{dataset}.log",
    params:
        reference=config["stats"]["reference"],
        backbones=lambda wc: " ".join(BACKBONES),
        modalities=lambda wc: " ".join(config["analysis"]["cka"].get("modalities") or ["all"]),
        depth=" ".join(config["analysis"].get("cka", {}).get("depth_labels", ["early", "mid", "late"])),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm cka --reference {params.reference} --backbones {params.backbones}"
        " --features {input} --modalities {params.modalities} --depth-labels {params.depth}"
        " --out {output} > {log} 2>&1"
