# Frozen feature extraction: once per (backbone, dataset); every head reads this cache.
# Package: brainfm.features.


rule extract_features:
    input:
        store=lambda wc: L.preprocess_report(wc.dataset),
        manifest=lambda wc: L.manifest(wc.dataset),
        weights=lambda wc: CFG.backbone_weights(wc.backbone),
    output:
        directory(L.features("{backbone}", "{dataset}")),
    log:
        L.log("features", "{backbone}", "{dataset}"),
    benchmark:
        L.benchmark("extract_features", "{backbone}", "{dataset}")
    params:
        backbone=lambda wc: CFG.backbones[wc.backbone].to_json(),
        features=CFG.features.to_json(),
        store=lambda wc: L.store(wc.dataset),
        central=lambda wc: "--central-patches" if CFG.needs_central_patches(wc.dataset) else "",
        device=CFG.device,
        precision=CFG.precision,
    threads: CFG.features.threads
    resources:
        gpu=resources_of(CFG.features, "gpu"),
        mem_mb=resources_of(CFG.features, "mem_mb"),
        runtime=resources_of(CFG.features, "runtime"),
    priority: PRIORITY["extract_features"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm extract-features --backbone {params.backbone:q} --features {params.features:q}"
        " --store {params.store} --manifest {input.manifest} --out {output} {params.central}"
        " --device {params.device} --precision {params.precision} > {log} 2>&1"
