# Self-supervised pretraining (paper §4.2 and the BrainIAC / BrainFound recipes). Package:
# brainfm.ssl. Checkpoints for resuming live in the run's work directory, outside the declared
# outputs, so Snakemake does not delete them when a job fails or is killed.


rule pretrain:
    input:
        pretrain_inputs,
    output:
        weights=L.pretrain_weights("{run}"),
        summary=L.pretrain_summary("{run}"),
    log:
        L.log("pretrain", "{run}"),
    benchmark:
        L.benchmark("pretrain", "{run}")
    params:
        spec=lambda wc: CFG.pretrain[wc.run].to_json(),
        stores=lambda wc: [L.preprocessed(d) for d in CFG.pretrain[wc.run].datasets],
        workdir=lambda wc: L.pretrain_work(wc.run),
        device=CFG.device,
    threads: 2
    resources:
        gpu=lambda wc: resources_of(CFG.pretrain[wc.run], "gpu"),
        mem_mb=lambda wc: resources_of(CFG.pretrain[wc.run], "mem_mb"),
        runtime=lambda wc: resources_of(CFG.pretrain[wc.run], "runtime"),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm pretrain --spec {params.spec:q} --stores {params.stores} --out {output.weights}"
        " --summary {output.summary} --work-dir {params.workdir} --device {params.device} > {log} 2>&1"
