# Frozen feature extraction: once per (backbone, dataset); every head reads this cache.


rule extract_features:
    input:
        store=lambda wc: preprocessed(wc.dataset),
        weights=lambda wc: backbone_weights(wc.backbone),
    output:
        directory("results/features/{backbone}/{dataset}"),
    log:
        "results/logs/features/{backbone}/{dataset}.log",
    benchmark:
        "results/benchmarks/features/{backbone}/{dataset}.tsv"
    params:
        spec=lambda wc: backbone_json(wc.backbone),
        weights=lambda wc, input: input.weights[0] if input.weights else "none",
        storedir=lambda wc: f"results/preprocessed/{wc.dataset}/downstream",
        batch_size=config["features"]["batch_size"],
        layers=lambda wc: ",".join(str(l) for l in backbone_layers(wc.backbone)) or "none",
        central=lambda wc: (
            ",".join(str(x) for x in config["features"]["central_range"]) if needs_central(wc.dataset) else "none"
        ),
        amp="--amp-bf16" if config["features"]["amp_bf16"] else "",
        device=config["device"],
    threads: config["features"]["threads"]
    resources:
        gpu=resources_of(config["features"], "gpu", 0),
        mem_mb=resources_of(config["features"], "mem_mb", 8000),
        runtime=resources_of(config["features"], "runtime", 60),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm extract --backbone {params.spec:q} --weights {params.weights} --store {params.storedir}"
        " --out {output} --batch-size {params.batch_size} --layers {params.layers}"
        " --central-range {params.central} {params.amp} --threads {threads} --device {params.device} > {log} 2>&1"
