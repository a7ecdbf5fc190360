# Self-supervised pretraining (paper §4.2 and the BrainIAC / BrainFound recipes). Checkpoints for
# resuming live in results/pretrain/{run}/work, outside the declared outputs, so Snakemake does not
# delete them when a job fails or is killed.


rule pretrain:
    input:
        pretrain_inputs,
    output:
        weights="results/pretrain/{run}/weights.pth",
        summary="results/pretrain/{run}/summary.json",
    log:
        "results/logs/pretrain/{run}.log",
    benchmark:
        "results/benchmarks/pretrain/{run}.tsv"
    params:
        recipe=lambda wc: PRETRAIN[wc.run]["recipe"],
        spec=lambda wc: to_json(PRETRAIN[wc.run]),
        stores=lambda wc: " ".join(f"results/preprocessed/{d}" for d in PRETRAIN[wc.run]["datasets"]),
        workdir=lambda wc: f"results/pretrain/{wc.run}/work",
        nproc=lambda wc: resources_of(PRETRAIN[wc.run], "nproc", 1),
        device=config["device"],
    threads: 2
    resources:
        gpu=pretrain_gpu,
        mem_mb=lambda wc: resources_of(PRETRAIN[wc.run], "mem_mb", 8000),
        runtime=lambda wc: resources_of(PRETRAIN[wc.run], "runtime", 60),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm pretrain --recipe {params.recipe} --spec {params.spec:q} --stores {params.stores}"
        " --out {output.weights} --summary {output.summary} --work-dir {params.workdir}"
        " --nproc {params.nproc} --device {params.device} > {log} 2>&1"
