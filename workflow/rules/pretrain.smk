# Self-supervised pretraining (paper §4.2 and the BrainIAC / BrainFound recipes). Package:
# brainfm.ssl. Checkpoints for resuming live in the run's work directory, outside the declared
# outputs, so Snakemake does not delete them when a job fails or is killed.
#
# Resources (config pretrain.<run>.resources): `gpu` GPUs per node, `nproc` processes per node,
# `nodes` nodes. One node: the SLURM plugin asks for --gpus=<gpu> and runs the job under its own
# `srun -n1`; `brainfm pretrain` starts torchrun --standalone. Several nodes: the job asks for
# --nodes=N --ntasks=N --gres=gpu:<gpu> (per node) and, through the `mpi` resource, runs without the
# plugin's srun wrapper so that `brainfm pretrain` can `srun` one torch.distributed.run launcher per
# node (c10d rendezvous on the first node).


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
        precision=CFG.precision,
    threads: lambda wc: CFG.pretrain[wc.run].threads
    resources:
        gpu=lambda wc: None if CFG.pretrain[wc.run].nnodes > 1 else resources_of(CFG.pretrain[wc.run], "gpu"),
        gres=lambda wc: pretrain_multinode(wc, f"gpu:{resources_of(CFG.pretrain[wc.run], 'gpu')}"
                                           if resources_of(CFG.pretrain[wc.run], "gpu") else None),
        nodes=lambda wc: CFG.pretrain[wc.run].nnodes,
        tasks=lambda wc: pretrain_multinode(wc, CFG.pretrain[wc.run].nnodes),
        tasks_per_gpu=lambda wc: pretrain_multinode(wc, 0),
        mpi=lambda wc: pretrain_multinode(wc, "srun"),
        mem_mb=lambda wc: resources_of(CFG.pretrain[wc.run], "mem_mb"),
        runtime=lambda wc: resources_of(CFG.pretrain[wc.run], "runtime"),
    priority: PRIORITY["pretrain"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm pretrain --spec {params.spec:q} --stores {params.stores} --out {output.weights}"
        " --summary {output.summary} --work-dir {params.workdir} --device {params.device}"
        " --precision {params.precision} > {log} 2>&1"


rule pretrain_curves:
    """Did pretraining learn? Each run's loss against ln K (DINO) or ln(2N-1) (SimCLR), teacher entropies."""
    input:
        [L.pretrain_summary(r) for r in CFG.pretrain],
    output:
        figure=report(
            L.figure("pretrain_curves"),
            caption="../report/pretrain_curves.rst",
            category="Figures",
            subcategory="pretraining",
        ),
        table=report(
            L.table("pretrain_curves"),
            caption="../report/pretrain_curves.rst",
            category="Tables",
            subcategory="pretraining",
        ),
    log:
        L.log("report", "pretrain_curves"),
    benchmark:
        L.benchmark("pretrain_curves", "all")
    params:
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm pretrain-curves --inputs {input} --figure {output.figure} --table {output.table}"
        " --labels {params.labels:q} > {log} 2>&1"
