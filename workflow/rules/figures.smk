# Cross-task figures and the headline table; plotting stays on the submit host.


rule cka_figure:
    input:
        expand("results/analysis/cka_{dataset}.parquet", dataset=config["analysis"].get("cka", {}).get("datasets", [])),
    output:
        report(
            "results/figures/cka.png",
            caption="../report/cka.rst",
            category="Figures",
            subcategory="representation",
        ),
    log:
        "results/logs/figures/cka.log",
    params:
        reference=config["stats"]["reference"],
        labels=to_json(backbone_labels()),
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm cka-report --inputs {input} --figure {output} --reference {params.reference}"
        " --labels {params.labels:q} > {log} 2>&1"


rule summary_table:
    input:
        comparisons=[f"results/stats/{t}/comparison.parquet" for t in head_tasks()],
        knn=[f"results/stats/{t}/knn.parquet" for t in knn_tasks()],
    output:
        report(
            "results/tables/summary.md",
            caption="../report/summary.rst",
            category="Tables",
            subcategory="summary",
        ),
    log:
        "results/logs/figures/summary.log",
    params:
        reference=config["stats"]["reference"],
        labels=to_json(backbone_labels()),
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm summary --comparisons {input.comparisons} --knn {input.knn} --out {output}"
        " --reference {params.reference} --labels {params.labels:q} > {log} 2>&1"


rule finetune_table:
    input:
        frozen=lambda wc: [f"results/tasks/{t}/{wc.backbone}/runs" for t in FINETUNE["tasks"]],
        finetuned=lambda wc: [f"results/tasks/{t}/{wc.backbone}/finetune" for t in FINETUNE["tasks"]],
    output:
        report(
            "results/tables/finetune_{backbone}.md",
            caption="../report/finetune.rst",
            category="Tables",
            subcategory="fine-tuning",
        ),
    log:
        "results/logs/figures/finetune_{backbone}.log",
    params:
        n_boot=config["stats"]["n_boot"],
        seed=config["stats"]["seed"],
        labels=to_json(backbone_labels()),
    localrule: True
    conda:
        "../../envs/brainfm.yaml"
    shell:
        "brainfm finetune-report --backbone {wildcards.backbone} --frozen {input.frozen}"
        " --finetuned {input.finetuned} --table {output} --n-boot {params.n_boot} --seed {params.seed}"
        " --labels {params.labels:q} > {log} 2>&1"
