# Datasets -> validated manifest.parquet (one row per image). Package: brainfm.data.


rule phantom_dataset:
    """Generate a phantom dataset from the ICBM152 template (the embedded default)."""
    output:
        manifest=L.manifest("{phantom}"),
    log:
        L.log("data", "{phantom}"),
    benchmark:
        L.benchmark("phantom_dataset", "{phantom}")
    params:
        dataset=lambda wc: CFG.datasets[wc.phantom].to_json(),
        phantom=CFG.phantom.to_json(),
        outdir=lambda wc, output: os.path.dirname(output.manifest),
    threads: CFG.phantom.n_jobs
    priority: PRIORITY["phantom_dataset"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm phantom-dataset --dataset {params.dataset:q} --phantom {params.phantom:q}"
        " --out {params.outdir} > {log} 2>&1"


rule real_dataset:
    """Check a real dataset on disk (downloading open ones) and build its manifest."""
    output:
        manifest=L.manifest("{real}"),
        check=L.dataset_check("{real}"),
    log:
        L.log("data", "{real}"),
    benchmark:
        L.benchmark("real_dataset", "{real}")
    params:
        dataset=lambda wc: CFG.datasets[wc.real].to_json(),
    retries: 2
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm real-dataset --dataset {params.dataset:q} --manifest {output.manifest}"
        " --check {output.check} > {log} 2>&1"


rule union_dataset:
    """Pool several datasets' manifests into one (subjects keep their dataset prefix)."""
    input:
        lambda wc: [L.manifest(p) for p in CFG.datasets[wc.union].parts],
    output:
        manifest=L.manifest("{union}"),
    log:
        L.log("data", "{union}"),
    benchmark:
        L.benchmark("union_dataset", "{union}")
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm union-dataset --name {wildcards.union} --inputs {input} --out {output.manifest} > {log} 2>&1"


rule subset_dataset:
    """The subjects of a dataset that a task never tests (e.g. for a pretraining corpus)."""
    input:
        lambda wc: L.manifest(CFG.datasets[wc.subset].of),
    output:
        manifest=L.manifest("{subset}"),
    log:
        L.log("data", "{subset}"),
    benchmark:
        L.benchmark("subset_dataset", "{subset}")
    params:
        dataset=lambda wc: CFG.datasets[wc.subset].to_json(),
        task=lambda wc: CFG.tasks[CFG.datasets[wc.subset].train_of].to_json(),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm subset-dataset --dataset {params.dataset:q} --task {params.task:q} --manifest {input}"
        " --out {output.manifest} > {log} 2>&1"


rule user_weights:
    """Baseline weights are user-supplied files: a missing one stops here with what to put where."""
    output:
        "{weightfile}",
    wildcard_constraints:
        weightfile=_alt(CFG.user_weights()),
    log:
        L.log("weights", "{weightfile}"),
    params:
        key=lambda wc: CFG.user_weights()[wc.weightfile].key,
        encoder=lambda wc: CFG.user_weights()[wc.weightfile].encoder,
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm user-weights --key {params.key} --encoder {params.encoder} --path {output} > {log} 2>&1"
