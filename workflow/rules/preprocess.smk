# Manifest -> preprocessed sharded stores (paper §4.1.2 / §4.3). The stores live next to the
# declared report.json (a sentinel) so a killed job resumes from its finished shards.


rule preprocess:
    input:
        manifest=lambda wc: manifest(wc.dataset),
    output:
        report="results/preprocessed/{dataset}/report.json",
    log:
        "results/logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    params:
        protocol=protocol_json(),
        products=lambda wc: products(wc.dataset),
        skull_strip=config["preprocess"]["skull_strip"],
        outdir=lambda wc, output: os.path.dirname(output.report),
        seed=config["seed"],
    threads: config["preprocess"]["n_jobs"]
    resources:
        mem_mb=resources_of(config["preprocess"], "mem_mb", 8000),
        runtime=resources_of(config["preprocess"], "runtime", 120),
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm preprocess --manifest {input.manifest} --out {params.outdir}"
        " --protocol {params.protocol:q} --products {params.products}"
        " --skull-strip {params.skull_strip} --n-jobs {threads} --seed {params.seed} > {log} 2>&1"
