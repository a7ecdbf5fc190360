# Manifest -> preprocessed sharded stores (paper §4.1.2 / §4.3). Package: brainfm.preprocess.
# The stores live next to the declared report.json (a sentinel) so a killed job resumes from its
# finished shards.


rule preprocess:
    input:
        manifest=lambda wc: L.manifest(wc.dataset),
    output:
        report=L.preprocess_report("{dataset}"),
    log:
        L.log("preprocess", "{dataset}"),
    benchmark:
        L.benchmark("preprocess", "{dataset}")
    params:
        preprocess=CFG.preprocess.to_json(),
        products=lambda wc: ",".join(CFG.products(wc.dataset)),
        outdir=lambda wc, output: os.path.dirname(output.report),
        seed=CFG.seed,
        device=CFG.device,
    threads: CFG.preprocess.n_jobs
    resources:
        mem_mb=resources_of(CFG.preprocess, "mem_mb"),
        runtime=resources_of(CFG.preprocess, "runtime"),
    priority: PRIORITY["preprocess"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm preprocess --manifest {input.manifest} --out {params.outdir} --preprocess {params.preprocess:q}"
        " --products {params.products} --n-jobs {threads} --seed {params.seed} --device {params.device}"
        " > {log} 2>&1"
