# Self-supervised pretraining (paper §4.2 and the BrainIAC / BrainFound recipes). Checkpoints for
# resuming live in results/pretrain/{run}/work, outside the declared outputs, so Snakemake does not
# delete them when a job fails or is killed.
#
# Resources (config pretrain.<run>.resources): `gpu` GPUs per node, `nproc` processes per node,
# `nodes` nodes. One node: the SLURM plugin asks for --gpus=<gpu> and runs the job under its own
# `srun -n1`; `brainfm pretrain` starts torchrun --standalone. Several nodes: the job asks for
# --nodes=N --ntasks=N --gres=gpu:<gpu> (per node) and, through the `mpi` resource, runs without the
# plugin's srun wrapper so that `brainfm pretrain --nnodes N` can `srun` one torch.distributed.run
# launcher per node (c10d rendezvous on the first node).


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
        nnodes=pretrain_nodes,
        device=config["device"],
    threads: 2
    resources:
        gpu=lambda wc: None if pretrain_nodes(wc) > 1 else pretrain_gpu(wc),
        gres=lambda wc: pretrain_multinode(wc, f"gpu:{pretrain_gpu(wc)}" if pretrain_gpu(wc) else None),
        nodes=pretrain_nodes,
        tasks=lambda wc: pretrain_multinode(wc, pretrain_nodes(wc)),
        tasks_per_gpu=lambda wc: pretrain_multinode(wc, 0),
        mpi=lambda wc: pretrain_multinode(wc, "srun"),
        mem_mb=lambda wc: resources_of(PRETRAIN[wc.run], "mem_mb", 8000),
        runtime=lambda wc: resources_of(PRETRAIN[wc.run], "runtime", 60),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm pretrain --recipe {params.recipe} --spec {params.spec:q} --stores {params.stores}"
        " --out {output.weights} --summary {output.summary} --work-dir {params.workdir}"
        " --nproc {params.nproc} --nnodes {params.nnodes} --device {params.device} > {log} 2>&1"
