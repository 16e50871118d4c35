"""Chat data: conversations for SFT and preference pairs for reward models, DPO and RLAIF.

One internal form, the common `messages` format. A conversation is a list of messages
`{"role": "system"|"user"|"assistant", "content": ...}` where the content is a string, or, for
an assistant turn that uses the search tool, a list of typed parts in the order they happen:

    {"type": "text", "text": "..."}              what the assistant says
    {"type": "search", "query": "..."}           its search call (<|search_start|>query<|search_end|>)
    {"type": "search_results", "text": "..."}    what the engine put back (<|result_start|>...<|result_end|>)

A plain string stays the common case (a content of text parts only is stored as one string).
A preference pair (`pairs.PreferencePair`) is a `prompt` (messages ending in a user turn) and
two assistant messages, `chosen` and `rejected`; on disk it is TRL's conversational layout
`{"prompt": [...], "chosen": [{"role": "assistant", ...}], "rejected": [...]}`.

Modules, one concern each:
- files.py: rows of JSON Lines, JSON arrays and Parquet files, local or s3://, gzip or not
- messages.py, sharegpt.py, alpaca.py, oasst.py, hh.py, trl.py: one source layout each (rows to
  conversations and, where the layout has them, to pairs); turns.py: what they share
- loading.py: the read -> import -> length funnel every loader runs, per file, with reasons
- conversations.py: `load_conversations` (SFT), `write_conversations`
- pairs.py: `load_pairs`, `write_pairs`
- mix.py: several sources with weights, mixed deterministically by seed
- qa.py: questions with known short answers taken from the pipeline's own documents
- search_examples.py: SFT conversations that teach the search tool, checked against the index
- idk.py: "I don't know" conversations from probing a model with qa.py's questions, and the
  refusal-rate / accuracy evaluation

Rendering to tokens with the loss mask is model/chat.py (the model layer needs it too).
"""
