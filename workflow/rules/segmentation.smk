# Tumour segmentation through nnU-Net v2 on frozen encoders (paper §2.1, §4.3.1; package:
# brainfm.segmentation). A benchmark is prepared once (raw dataset, plans, preprocessing, fold
# split); every (benchmark, backbone, ratio, seed) cell is its own training job, so a cluster runs
# them in parallel and one cell reruns alone. Statistics, Supp. Tables 5/7 and Figs. 2/3a close it.


rule prepare_segmentation:
    """nnU-Net raw dataset (4 channels, region labels, test cases aside), plans and preprocessing."""
    wildcard_constraints:
        benchmark=_alt(CFG.segmentation_benchmarks()),
    input:
        manifest=L.manifest("{benchmark}"),
    output:
        L.segmentation_prepared("{benchmark}"),
    log:
        L.log("segmentation", "{benchmark}", "prepare"),
    benchmark:
        L.benchmark("prepare_segmentation", "{benchmark}")
    params:
        dataset=lambda wc: CFG.datasets[wc.benchmark].to_json(),
        configurations=SEG.configurations(),
        settings=SEG.prepare_json(),
    threads: SEG.processes
    resources:
        mem_mb=resources_of(SEG, "mem_mb"),
        runtime=resources_of(SEG, "runtime"),
    priority: PRIORITY["prepare_segmentation"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm prepare-segmentation --dataset {params.dataset:q} --manifest {input.manifest}"
        " --configurations {params.configurations} --settings {params.settings:q} --out {output} > {log} 2>&1"


rule segment:
    """One training job: the ratio's nested subset of fold 0, frozen encoder, Dice on the test cases."""
    wildcard_constraints:
        benchmark=_alt(CFG.segmentation_benchmarks()),
        backbone=_alt(CFG.segmentation_backbones()),
        ratio=_alt(SEG_RATIOS),
        seed=_alt(str(s) for s in SEG.seeds),
    input:
        unpack(segment_inputs),
    output:
        directory(L.segmentation_run("{benchmark}", "{backbone}", "{ratio}", "{seed}")),
    log:
        L.log("segmentation", "{benchmark}", "{backbone}", "ratio~{ratio}_seed~{seed}"),
    benchmark:
        L.benchmark("segment", "{benchmark}", "{backbone}", "ratio~{ratio}_seed~{seed}")
    params:
        backbone=lambda wc: CFG.backbones[wc.backbone].to_json(),
        network=lambda wc: SEG.backbone_json(wc.backbone),
        settings=SEG.job_json(),
        device=CFG.device,
        precision=CFG.precision,
    threads: SEG.threads
    resources:
        gpu=resources_of(SEG, "gpu"),
        mem_mb=resources_of(SEG, "mem_mb"),
        runtime=resources_of(SEG, "runtime"),
    priority: PRIORITY["segment"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm segment --benchmark {input.benchmark} --name {wildcards.benchmark} --backbone {params.backbone:q}"
        " --network {params.network:q} --ratio {wildcards.ratio} --seed {wildcards.seed}"
        " --settings {params.settings:q} --pretrain-manifests {input.pretrain} --device {params.device}"
        " --precision {params.precision} --out {output} > {log} 2>&1"


rule segment_finetune:
    """Supp. Table 6: the same cell with the encoder trained too (full fine-tuning), beside its frozen job."""
    wildcard_constraints:
        benchmark=_alt(CFG.segmentation_benchmarks()),
        backbone=_alt(CFG.segmentation_backbones()),
        ratio=_alt(SEG_RATIOS),
        seed=_alt(str(s) for s in SEG.seeds),
    input:
        unpack(segment_inputs),
    output:
        directory(L.segmentation_finetune_run("{benchmark}", "{backbone}", "{ratio}", "{seed}")),
    log:
        L.log("segmentation", "{benchmark}", "{backbone}", "finetune_ratio~{ratio}_seed~{seed}"),
    benchmark:
        L.benchmark("segment_finetune", "{benchmark}", "{backbone}", "ratio~{ratio}_seed~{seed}")
    params:
        backbone=lambda wc: CFG.backbones[wc.backbone].to_json(),
        network=lambda wc: SEG.backbone_json(wc.backbone),
        settings=SEG.finetune_job_json(),
        device=CFG.device,
        precision=CFG.precision,
    threads: SEG.threads
    resources:
        gpu=resources_of(SEG, "gpu"),
        mem_mb=resources_of(SEG, "mem_mb"),
        runtime=resources_of(SEG, "runtime"),
    priority: PRIORITY["segment_finetune"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm segment-finetune --benchmark {input.benchmark} --name {wildcards.benchmark}"
        " --backbone {params.backbone:q} --network {params.network:q} --ratio {wildcards.ratio}"
        " --seed {wildcards.seed} --settings {params.settings:q} --pretrain-manifests {input.pretrain}"
        " --device {params.device} --precision {params.precision} --out {output} > {log} 2>&1"


rule segmentation_stats:
    """Dice vs ratio per benchmark x region (Fig. 3a) and its table (Supp. Table 7)."""
    input:
        segmentation_runs(),
    output:
        comparison=L.stats("segmentation", "comparison.parquet"),
        table=report(
            L.table("segmentation_dice"),
            caption="../report/segmentation_table.rst",
            category="Tables",
            subcategory="segmentation",
            labels={"task": "segmentation", "kind": "Dice per ratio (Supp. Table 7)"},
        ),
        figure=report(
            L.figure("segmentation_dice"),
            caption="../report/segmentation_dice.rst",
            category="Figures",
            subcategory="segmentation",
            labels={"task": "segmentation", "kind": "Dice vs label ratio (Fig. 3a)"},
        ),
    log:
        L.log("stats", "segmentation"),
    benchmark:
        L.benchmark("segmentation_stats", "all")
    params:
        settings=as_json({"all_background": SEG.all_background, "adjust": SEG.adjust}),
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm segmentation-stats --runs {input} --settings {params.settings:q} --out {output.comparison}"
        " --table {output.table} --figure {output.figure} --stats {params.stats:q} --labels {params.labels:q}"
        " > {log} 2>&1"


rule segmentation_labels:
    """Raw mask values of each benchmark's regions, from the dataset registry (Supp. Table 5)."""
    output:
        report(
            L.table("segmentation_labels"),
            caption="../report/segmentation_labels.rst",
            category="Tables",
            subcategory="segmentation",
            labels={"task": "segmentation", "kind": "label maps (Supp. Table 5)"},
        ),
    log:
        L.log("report", "segmentation_labels"),
    benchmark:
        L.benchmark("segmentation_labels", "all")
    params:
        benchmarks=[
            f"{bm}={CFG.datasets[bm].registry or bm}" for bm in CFG.segmentation_benchmarks()
        ],
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm segmentation-labels --benchmarks {params.benchmarks} --table {output} > {log} 2>&1"


rule segmentation_figure:
    """Input slice, ground truth and each backbone's contours per region on chosen test cases (Fig. 2)."""
    input:
        benchmarks=[L.segmentation_prepared(bm) for bm in CFG.segmentation_benchmarks()],
        runs=list(segmentation_figure_runs().values()),
    output:
        report(
            L.figure("segmentation_examples"),
            caption="../report/segmentation_examples.rst",
            category="Figures",
            subcategory="segmentation",
            labels={"task": "segmentation", "kind": "examples (Fig. 2)"},
        ),
    log:
        L.log("report", "segmentation_examples"),
    benchmark:
        L.benchmark("segmentation_figure", "all")
    params:
        benchmarks=[
            f"{bm}={L.segmentation_prepared(bm)}" for bm in CFG.segmentation_benchmarks()
        ],
        runs=[f"{k}={v}" for k, v in segmentation_figure_runs().items()],
        cases=SEG.figure_cases,
        stats=STATS,
        labels=LABELS,
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm segmentation-figure --benchmarks {params.benchmarks} --runs {params.runs} --cases {params.cases}"
        " --figure {output} --stats {params.stats:q} --labels {params.labels:q} > {log} 2>&1"


rule segment_perturbed:
    """A full-data model on perturbed test images, one perturbation at a time (Fig. 5, Supp. Table 18)."""
    wildcard_constraints:
        benchmark=_alt(sorted({bm for bm, _ in CFG.segmentation_perturbed()})),
        backbone=_alt(sorted({b for _, b in CFG.segmentation_perturbed()})),
    input:
        benchmark=L.segmentation_prepared("{benchmark}"),
        run=lambda wc: L.segmentation_run(
            wc.benchmark, wc.backbone, max(SEG.ratios), min(SEG.seeds)
        ),
    output:
        L.segmentation_perturbed("{benchmark}", "{backbone}"),
    log:
        L.log("segmentation", "{benchmark}", "{backbone}", "perturbed"),
    benchmark:
        L.benchmark("segment_perturbed", "{benchmark}", "{backbone}")
    params:
        settings=[s.tag for s in CFG.perturbation_settings()],
        seed=CFG.seed,
        stats=STATS,
        threads=SEG.threads,
        device=CFG.device,
    threads: SEG.threads
    resources:
        gpu=resources_of(SEG, "gpu"),
        mem_mb=resources_of(SEG, "mem_mb"),
    priority: PRIORITY["segment_perturbed"]
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm segment-perturbed --benchmark {input.benchmark} --run {input.run} --name {wildcards.benchmark}"
        " --backbone {wildcards.backbone} --settings {params.settings} --seed {params.seed}"
        " --stats {params.stats:q} --threads {params.threads} --device {params.device} --out {output} > {log} 2>&1"
