"""Tasks whose answers can be checked: arithmetic word problems, GSM8K, and the strict rewards.

`problems.py` is what a task gives GRPO (a Problem: a question, its canonical answer, a worked
solution; train problems by index, a fixed held-out set), `arithmetic.py` the generator with a
difficulty dial, `gsm8k.py` the GSM8K reader (any `{question, answer}` file whose answers end in
`#### <number>`), `rewards.py` the final-answer extractor and the rewards.
"""
