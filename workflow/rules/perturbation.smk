# Test-time perturbations (paper §4.5; package: brainfm.perturb): perturb raw volumes, preprocess
# and extract again (the same commands as the clean steps), then evaluate the clean full-data
# heads on the perturbed features.


rule preprocess_perturbed:
    input:
        manifest=lambda wc: L.manifest(wc.dataset),
    output:
        report=L.preprocess_report("{dataset}", "{perturbation}"),
    log:
        L.log("perturbed", "{perturbation}", "preprocess_{dataset}"),
    benchmark:
        L.benchmark("preprocess_perturbed", "{perturbation}", "{dataset}")
    params:
        preprocess=CFG.preprocess.to_json(),
        outdir=lambda wc, output: os.path.dirname(output.report),
        seed=CFG.seed,
        device=CFG.device,
    threads: 1
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm preprocess --manifest {input.manifest} --out {params.outdir} --preprocess {params.preprocess:q}"
        " --products downstream --n-jobs {threads} --seed {params.seed} --device {params.device}"
        " --perturbation {wildcards.perturbation} > {log} 2>&1"


rule extract_perturbed:
    input:
        store=L.preprocess_report("{dataset}", "{perturbation}"),
        weights=lambda wc: CFG.backbone_weights(wc.backbone),
    output:
        directory(L.features("{backbone}", "{dataset}", "{perturbation}")),
    log:
        L.log("perturbed", "{perturbation}", "features_{backbone}_{dataset}"),
    benchmark:
        L.benchmark("extract_perturbed", "{perturbation}", "{backbone}", "{dataset}")
    params:
        backbone=lambda wc: CFG.backbones[wc.backbone].to_json(),
        features=CFG.features.to_json(),
        store=lambda wc: L.store(wc.dataset, "downstream", wc.perturbation),
        central=lambda wc: "--central-patches" if CFG.needs_central_patches(wc.dataset) else "",
        device=CFG.device,
        precision=CFG.precision,
    threads: CFG.features.threads
    resources:
        gpu=resources_of(CFG.features, "gpu"),
    priority: PRIORITY["extract_perturbed"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm extract-features --backbone {params.backbone:q} --features {params.features:q}"
        " --store {params.store} --out {output} --no-layers {params.central} --device {params.device}"
        " --precision {params.precision} > {log} 2>&1"


rule evaluate_perturbed:
    input:
        unpack(perturbed_inputs),
    output:
        results=L.perturbed_results("{task}", "{backbone}"),
        predictions=L.perturbed_predictions("{task}", "{backbone}"),
    log:
        L.log("perturbed", "evaluate_{task}_{backbone}"),
    benchmark:
        L.benchmark("evaluate_perturbed", "{task}", "{backbone}")
    params:
        task=lambda wc: CFG.tasks[wc.task].to_json(),
        perturbed=lambda wc, input: [f"{s.tag}={p}" for s, p in zip(CFG.perturbation_settings(), input.perturbed)],
        stats=STATS,
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm evaluate-perturbed --task {params.task:q} --features {input.features}"
        " --perturbed {params.perturbed} --manifest {input.manifest} --backbone {wildcards.backbone}"
        " --stats {params.stats:q} --out {output.results} --predictions {output.predictions} > {log} 2>&1"


rule perturbation_stats:
    input:
        results=[L.perturbed_results(t, b) for t in CFG.perturbations.tasks for b in CFG.perturbations.backbones]
        + [L.segmentation_perturbed(bm, b) for bm, b in CFG.segmentation_perturbed()],
        predictions=[
            L.perturbed_predictions(t, b) for t in CFG.perturbations.tasks for b in CFG.perturbations.backbones
        ],
    output:
        table=L.table("perturbations"),
        comparison=L.stats("perturbations", "comparison.parquet"),
        figure=report(
            L.figure("perturbations"),
            caption="../report/perturbations.rst",
            category="Figures",
            subcategory="robustness",
        ),
    log:
        L.log("stats", "perturbations"),
    benchmark:
        L.benchmark("perturbation_stats", "all")
    params:
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm perturbation-stats --inputs {input.results} --predictions {input.predictions}"
        " --table {output.table} --figure {output.figure} --comparison {output.comparison}"
        " --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"
