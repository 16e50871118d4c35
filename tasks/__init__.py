"""The units of work of the pipeline, usable without Spark or Prefect.

Words, used one way across the project:
- step: one per-document decision or rewrite in a chain (`tasks.pipeline.Step`: keep, drop with
  a reason, or rewrite the text); steps know nothing of files, Spark or Prefect.
- stage: one phase of the pipeline with an output folder of its own (filter, dedup, tokenize,
  pretrain, sft, reward, ppo, dpo, grpo); a stage's output is committed by a marker written last.
- unit: one input file's share of a stage (a WARC, a docs part); units are resumable, each
  committed by its `_progress/<unit>.json` marker.
- job: the Spark program that runs a stage's units (`tasks/jobs/`).
- Prefect task and flow: the thin wrappers in `flows/` that run stages and chain them.

Folders by kind: `readers/` (inputs and WARC), `filters/` (URL, extraction, language, quality,
PII and the chain that orders them), `dedup/`, `formats/` (the docs Parquet hand-off between
stages), `jobs/` (Spark jobs), `train/` (the training stages) and `samples/` (generators of sample
data for runs and tests).
"""
