# Test-time perturbations (paper §4.5): perturb raw volumes, preprocess and extract again, then
# evaluate the clean full-data heads on the perturbed features.


rule preprocess_perturbed:
    input:
        manifest=lambda wc: manifest(wc.dataset),
    output:
        report="results/perturbed/{kind}~{severity}/preprocessed/{dataset}/report.json",
    log:
        "results/logs/perturbed/{kind}~{severity}/preprocess_{dataset}.log",
    params:
        protocol=protocol_json(),
        skull_strip=config["preprocess"]["skull_strip"],
        outdir=lambda wc, output: os.path.dirname(output.report),
        seed=config["seed"],
    threads: 1
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm preprocess --manifest {input.manifest} --out {params.outdir} --protocol {params.protocol:q}"
        " --products downstream --skull-strip {params.skull_strip} --n-jobs {threads} --seed {params.seed}"
        " --perturbation {wildcards.kind}:{wildcards.severity} > {log} 2>&1"


rule extract_perturbed:
    input:
        store="results/perturbed/{kind}~{severity}/preprocessed/{dataset}/report.json",
        weights=lambda wc: backbone_weights(wc.backbone),
    output:
        directory("results/perturbed/{kind}~{severity}/features/{backbone}/{dataset}"),
    log:
        "results/logs/perturbed/{kind}~{severity}/features_{backbone}_{dataset}.log",
    params:
        spec=lambda wc: backbone_json(wc.backbone),
        weights=lambda wc, input: input.weights[0] if input.weights else "none",
        storedir=lambda wc, input: os.path.join(os.path.dirname(input.store), "downstream"),
        batch_size=config["features"]["batch_size"],
        central=lambda wc: (
            ",".join(str(x) for x in config["features"]["central_range"]) if needs_central(wc.dataset) else "none"
        ),
        amp="--amp-bf16" if config["features"]["amp_bf16"] else "",
        device=config["device"],
    threads: config["features"]["threads"]
    resources:
        gpu=resources_of(config["features"], "gpu", 0),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm extract --backbone {params.spec:q} --weights {params.weights} --store {params.storedir}"
        " --out {output} --batch-size {params.batch_size} --layers none"
        " --central-range {params.central} {params.amp} --threads {threads} --device {params.device} > {log} 2>&1"


rule evaluate_perturbed:
    input:
        unpack(perturbed_inputs),
    output:
        "results/perturbed/results/{task}/{backbone}.parquet",
    log:
        "results/logs/perturbed/evaluate_{task}_{backbone}.log",
    params:
        spec=lambda wc: task_json(wc.task),
        head=to_json(config.get("head", {})),
        settings=lambda wc, input: " ".join(
            f"{k}:{fmt_ratio(s)}={p}" for (k, s), p in zip(perturb_settings(), input.perturbed)
        ),
        n_boot=config["stats"]["n_boot"],
        seed=config["stats"]["seed"],
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm perturbed --task {wildcards.task} --spec {params.spec:q} --head {params.head:q}"
        " --features {input.features} --perturbed {params.settings} --manifest {input.manifest}"
        " --backbone {wildcards.backbone} --n-boot {params.n_boot} --stats-seed {params.seed}"
        " --out {output} > {log} 2>&1"


rule perturbation_report:
    input:
        expand(
            "results/perturbed/results/{task}/{backbone}.parquet",
            task=PERTURB.get("tasks", []),
            backbone=perturb_backbones(),
        ),
    output:
        table="results/tables/perturbations.md",
        figure=report(
            "results/figures/perturbations.png",
            caption="../report/perturbations.rst",
            category="Figures",
            subcategory="robustness",
        ),
    log:
        "results/logs/figures/perturbations.log",
    params:
        reference=config["stats"]["reference"],
        labels=to_json(backbone_labels()),
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm perturbation-report --inputs {input} --table {output.table} --figure {output.figure}"
        " --reference {params.reference} --labels {params.labels:q} > {log} 2>&1"
