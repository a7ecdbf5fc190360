# Datasets -> validated manifest.parquet (one row per image).


rule phantom_dataset:
    """Generate a phantom dataset from the ICBM152 template (the embedded default)."""
    output:
        manifest="results/data/{phantom}/manifest.parquet",
    log:
        "results/logs/data/{phantom}.log",
    benchmark:
        "results/benchmarks/data/{phantom}.tsv"
    params:
        generator=lambda wc: DATASETS[wc.phantom].get("registry", wc.phantom),
        n_subjects=lambda wc: DATASETS[wc.phantom].get("n_subjects", 20),
        options=lambda wc: to_json(DATASETS[wc.phantom].get("options", {})),
        voxel_size=config["phantom"]["voxel_size"],
        n_sites=config["phantom"]["n_sites"],
        seed=config["phantom"]["seed"],
        test_fraction=config["phantom"]["test_fraction"],
        outdir=lambda wc, output: os.path.dirname(output.manifest),
        cache=config["phantom"]["cache_dir"],
    threads: config["phantom"]["n_jobs"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm phantom --generator {params.generator} --out {params.outdir}"
        " --n-subjects {params.n_subjects} --seed {params.seed} --voxel-size {params.voxel_size}"
        " --n-sites {params.n_sites} --test-fraction {params.test_fraction}"
        " --options {params.options:q} --cache-dir {params.cache} --n-jobs {threads} > {log} 2>&1"


rule real_dataset:
    """Check a real dataset on disk (downloading open ones) and build its manifest."""
    output:
        manifest="results/data/{real}/manifest.parquet",
        check="results/data/{real}/check.json",
    log:
        "results/logs/data/{real}.log",
    params:
        registry=lambda wc: DATASETS[wc.real].get("registry", wc.real),
        path=lambda wc: DATASETS[wc.real].get("path", f"data/{wc.real}"),
        download=lambda wc: "--download" if DATASETS[wc.real]["source"] == "download" else "",
    retries: 2
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm dataset --registry {params.registry} --root {params.path} {params.download}"
        " --manifest {output.manifest} --check {output.check} > {log} 2>&1"


rule union_dataset:
    """Pool several datasets' manifests into one (subjects keep their dataset prefix)."""
    input:
        lambda wc: [manifest(p) for p in DATASETS[wc.union]["parts"]],
    output:
        manifest="results/data/{union}/manifest.parquet",
    log:
        "results/logs/data/{union}.log",
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm union --name {wildcards.union} --inputs {input} --out {output.manifest} > {log} 2>&1"


rule subset_dataset:
    """The subjects of a dataset that a task never tests (e.g. for a pretraining corpus)."""
    input:
        lambda wc: manifest(DATASETS[wc.subset]["of"]),
    output:
        manifest="results/data/{subset}/manifest.parquet",
    log:
        "results/logs/data/{subset}.log",
    params:
        task=lambda wc: DATASETS[wc.subset]["train_of"],
        spec=lambda wc: task_json(DATASETS[wc.subset]["train_of"]),
        only=lambda wc: (f"--source-dataset {DATASETS[wc.subset]['source_dataset']}"
                         if DATASETS[wc.subset].get("source_dataset") else ""),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm subset --name {wildcards.subset} --manifest {input} --task {params.task}"
        " --spec {params.spec:q} {params.only} --out {output.manifest} > {log} 2>&1"


rule user_weights:
    """Baseline weights are user-supplied files: a missing one stops here with what to put where."""
    output:
        "{weightfile}",
    wildcard_constraints:
        weightfile=_alt(user_weight_files()),
    log:
        "results/logs/weights/{weightfile}.log",
    params:
        key=lambda wc: user_weight_owners()[wc.weightfile][0],
        encoder=lambda wc: user_weight_owners()[wc.weightfile][1],
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm missing-weights --key {params.key} --encoder {params.encoder}"
        " --path {output} > {log} 2>&1"
