"""Export to Hugging Face's format, and back: how every other tool gets to use what we train.

    export_checkpoint("runs/base", "hf/base")   # a run's newest checkpoint (or one folder) -> DIR
    model, tokenizer = load_exported("hf/base")  # and back to our GPT and BpeTokenizer
    model, tokenizer = load_for_inference(uri)   # either of the two, for generate, chat and serve

The directory is what `AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)` read, offline, with no code of ours:

    config.json             Qwen3ForCausalLM (LlamaForCausalLM when QK-norm is off): the shape,
                            dtype, context (max_position_embeddings), bos/eos/pad ids
    model.safetensors       the weights under transformers' names (ours with a `model.` prefix;
                            no `lm_head.weight` when the head is tied to the embedding)
    generation_config.json  stop on `<|im_end|>` (end of a chat turn) and `<|bos|>` (end of text:
                            every pretraining document starts with it, so a base model that has
                            finished a document predicts it next)
    tokenizer.json          our BPE, plus a post-processor that puts `<|bos|>` before encoded
                            text, as our documents start (as Llama's tokenizer does)
    tokenizer_config.json   the special tokens and CHAT_TEMPLATE, a Jinja rendering of
                            `BpeTokenizer.encode_chat`

GPT's architecture is Qwen3's, so the weights go across renamed and nothing else; the parity
tests check logits, greedy continuations and chat-template ids against transformers itself.
config.json is written last: a crash mid-export leaves a directory no loader takes for whole.

Two differences cannot be closed, because transformers renders a chat to one string and then
tokenizes it: a special-token string typed inside a message (say "<|im_end|>") becomes that
special token there, while `encode_chat` encodes message text as plain text, so no content can
forge a turn boundary; and two text parts in a row are tokenized as one text there, as two here
(the ids can differ where they meet). Our own chat, serve and training paths all use `encode_chat`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from infra.storage import Storage, join
from model.checkpoint import CheckpointError, load_model, load_weights, model_tensors
from model.gpt import GPT, GPTConfig
from model.tokenizer import (
    BOS,
    IM_END,
    IM_SEP,
    IM_START,
    RESULT_END,
    RESULT_START,
    SEARCH_END,
    SEARCH_START,
    SPECIAL_TOKENS,
    BpeTokenizer,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PREFIX = "model."  # transformers keeps the decoder under `model`; only the head sits outside it

# `BpeTokenizer.encode_chat` in Jinja, for `apply_chat_template`: a content is a string or, for
# an assistant that used the search tool, a list of typed parts (model/chat.py): text, a search
# call, its results. No whitespace outside the tags: every character outside them is output.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    f"{{{{ '{IM_START}' + message['role'] + '{IM_SEP}' }}}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    f"{{% elif part['type'] == 'search' %}}{{{{ '{SEARCH_START}' + part['query'] + '{SEARCH_END}' }}}}"
    f"{{% elif part['type'] == 'search_results' %}}{{{{ '{RESULT_START}' + part['text'] + '{RESULT_END}' }}}}"
    "{% else %}{{ raise_exception('unknown content part type: ' + part['type']) }}"
    "{% endif %}{% endfor %}{% endif %}"
    f"{{{{ '{IM_END}' }}}}"
    "{% endfor %}"
    f"{{% if add_generation_prompt %}}{{{{ '{IM_START}assistant{IM_SEP}' }}}}{{% endif %}}"
)


class ExportError(ValueError):
    """A directory that is not an export we can read back, in one line naming the problem."""


# -- writing ------------------------------------------------------------------------------------


def hf_config(config: GPTConfig, tokenizer: BpeTokenizer, dtype: str = "float32") -> dict[str, Any]:
    """config.json: Qwen3ForCausalLM, or LlamaForCausalLM for a model without QK-norm.

    The rotary base is written both ways transformers has spelled it (`rope_parameters` from v5
    on, `rope_theta` before, which vLLM and llama.cpp's converter also read), and so is the dtype.
    """
    qwen = config.qk_norm
    fields: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM" if qwen else "LlamaForCausalLM"],
        "model_type": "qwen3" if qwen else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": config.init_std,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.special_ids[IM_END],
        "pad_token_id": tokenizer.bos_id,
        "use_cache": True,
        "dtype": dtype,
        "torch_dtype": dtype,
    }
    if qwen:
        fields |= {"use_sliding_window": False, "sliding_window": None, "max_window_layers": config.n_layer,
                   "layer_types": ["full_attention"] * config.n_layer}
    else:
        fields |= {"mlp_bias": False, "pretraining_tp": 1}
    return fields


def generation_config(tokenizer: BpeTokenizer) -> dict[str, Any]:
    """Stop at the end of an assistant turn or of a text. There is no pad token: padding takes
    `<|bos|>`'s id and the attention mask keeps it out."""
    return {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": [tokenizer.special_ids[IM_END], tokenizer.bos_id],
        "pad_token_id": tokenizer.bos_id,
    }


def hf_tokenizer_json(tokenizer: BpeTokenizer) -> str:
    """Our tokenizer.json with a post-processor adding `<|bos|>` in front of encoded text (only when
    the caller asks for special tokens: `apply_chat_template` does not, its template has it)."""
    data = json.loads(tokenizer.json)
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {BOS: {"id": BOS, "ids": [tokenizer.bos_id], "tokens": [BOS]}},
    }
    return json.dumps(data, ensure_ascii=False)


def tokenizer_config(tokenizer: BpeTokenizer, seq_len: int) -> dict[str, Any]:
    """tokenizer_config.json, in the fields both transformers 4 and 5 read."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": BOS,
        "unk_token": None,
        "additional_special_tokens": [token for token in SPECIAL_TOKENS if token not in (BOS, IM_END)],
        "model_max_length": seq_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def hf_tensors(model: GPT, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """The model's weights under transformers' names, in `dtype` (a tied head stored once, as the
    embedding: transformers ties it again from `tie_word_embeddings`)."""
    return {
        name if name.startswith("lm_head.") else PREFIX + name: tensor.to(DTYPES[dtype])
        for name, tensor in model_tensors(model).items()
    }


def export_model(model: GPT, tokenizer: BpeTokenizer, output: str, storage: Storage | None = None, dtype: str = "float32") -> dict[str, Any]:
    """Write `model` and `tokenizer` as a Hugging Face directory at `output`; return its config."""
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    storage = storage or Storage()
    config = hf_config(model.config, tokenizer, dtype)
    if storage.exists(join(output, CONFIG_FILE)):  # an older export here: uncommit it before replacing its files
        storage.delete(join(output, CONFIG_FILE))
    storage.write_bytes(join(output, WEIGHTS_FILE), save_safetensors(hf_tensors(model, dtype), metadata={"format": "pt"}))
    storage.write_text(join(output, TOKENIZER_FILE), hf_tokenizer_json(tokenizer))
    storage.write_text(join(output, TOKENIZER_CONFIG_FILE), json.dumps(tokenizer_config(tokenizer, model.config.seq_len), indent=2))
    storage.write_text(join(output, GENERATION_CONFIG_FILE), json.dumps(generation_config(tokenizer), indent=2))
    storage.write_text(join(output, CONFIG_FILE), json.dumps(config, indent=2))  # last: the commit point
    return config


def export_checkpoint(uri: str, output: str, storage: Storage | None = None, dtype: str = "float32") -> dict[str, Any]:
    """Export a checkpoint (a run's newest complete one, or one checkpoint folder) to `output`.
    Heads a later stage added (a reward score, a value head) are not part of a causal LM and
    stay behind. Returns what was written, for the CLI to report."""
    storage = storage or Storage()
    model, tokenizer, checkpoint = load_model(uri, storage)
    config = export_model(model, tokenizer, output, storage, dtype)
    return {"checkpoint": checkpoint.uri, "stage": checkpoint.stage, "step": checkpoint.step, "output": output,
            "architecture": config["architectures"][0], "dtype": dtype, "parameters": model.config.num_params()}


# -- reading back -------------------------------------------------------------------------------


def is_exported(uri: str, storage: Storage | None = None) -> bool:
    """Whether `uri` is a Hugging Face directory (a checkpoint folder has no config.json)."""
    return (storage or Storage()).exists(join(uri.rstrip("/"), CONFIG_FILE))


def _gpt_config(config: dict[str, Any], where: str) -> GPTConfig:
    """GPTConfig from a config.json, refusing what GPT cannot compute exactly (other
    architectures, biases, rotary scaling, sliding windows, a head size of its own)."""
    model_type = config.get("model_type")
    if model_type not in ("qwen3", "llama"):
        raise ExportError(f"{where}: model_type {model_type!r} is not one GPT computes (qwen3 or llama)")
    missing = [key for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "max_position_embeddings") if key not in config]
    if missing:
        raise ExportError(f"{where}: missing {', '.join(missing)}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    unsupported = {
        "an activation other than silu": config.get("hidden_act", "silu") != "silu",
        "biases": bool(config.get("attention_bias") or config.get("mlp_bias")),
        "rotary scaling": rope.get("rope_type", rope.get("type", "default")) != "default",
        "sliding windows": bool(config.get("use_sliding_window")),
        "a head_dim other than hidden_size / num_attention_heads": config.get("head_dim", hidden // heads) * heads != hidden,
    }
    if any(unsupported.values()):
        raise ExportError(f"{where}: GPT does not compute {', '.join(k for k, v in unsupported.items() if v)}")
    try:
        return GPTConfig(
            vocab_size=config["vocab_size"], n_layer=config["num_hidden_layers"], n_head=heads,
            n_kv_head=config.get("num_key_value_heads") or heads, n_embd=hidden,
            seq_len=config["max_position_embeddings"], mlp_hidden=config["intermediate_size"],
            tie_embeddings=config.get("tie_word_embeddings", False), qk_norm=model_type == "qwen3",
            rope_theta=rope.get("rope_theta", config.get("rope_theta", 10_000.0)),
            norm_eps=config.get("rms_norm_eps", 1e-6), init_std=config.get("initializer_range", 0.02),
        )
    except ValidationError as error:  # a field of the wrong type
        problem = error.errors()[0]
        raise ExportError(f"{where}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from error


def load_exported(directory: str, storage: Storage | None = None, device: str | torch.device = "cpu") -> tuple[GPT, BpeTokenizer]:
    """Our GPT (float32, on `device`, in eval mode) and BpeTokenizer from an exported directory.

    The tokenizer comes back without the export's `<|bos|>` post-processor, so it is the very
    tokenizer (same sha256) the checkpoint was trained with."""
    storage = storage or Storage()
    directory = directory.rstrip("/")
    files = {name: join(directory, name) for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)}
    missing = [uri for uri in files.values() if not storage.exists(uri)]
    if missing:
        raise ExportError(f"{directory} is not an exported model: {missing[0]} is missing")
    try:
        config = _gpt_config(json.loads(storage.read_text(files[CONFIG_FILE])), files[CONFIG_FILE])
        tokenizer_data = json.loads(storage.read_text(files[TOKENIZER_FILE]))
        tokenizer_data["post_processor"] = None
        tokenizer = BpeTokenizer.from_json(json.dumps(tokenizer_data, ensure_ascii=False))
    except json.JSONDecodeError as error:
        raise ExportError(f"{directory}: unreadable JSON ({error})") from error
    except ExportError:
        raise
    except Exception as error:  # noqa: BLE001 - tokenizers' own parse errors and missing specials, in one line
        raise ExportError(f"{files[TOKENIZER_FILE]} is not a tokenizer GPT can use: {str(error).splitlines()[0]}") from error
    if tokenizer.vocab_size != config.vocab_size:
        raise ExportError(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens, config.json says {config.vocab_size}")
    try:
        tensors = load_safetensors(storage.read_bytes(files[WEIGHTS_FILE]))
    except Exception as error:  # noqa: BLE001 - safetensors' own parse errors, in one line
        raise ExportError(f"{files[WEIGHTS_FILE]} is unreadable: {error}") from error
    model = GPT(config)
    ours = {name.removeprefix(PREFIX): tensor.float() for name, tensor in tensors.items()}
    try:
        extra = load_weights(model, ours)
    except (CheckpointError, RuntimeError) as error:
        raise ExportError(f"{files[WEIGHTS_FILE]} does not fit config.json: {str(error).splitlines()[0]}") from error
    if extra:
        raise ExportError(f"{files[WEIGHTS_FILE]} holds weights GPT has no place for: {sorted(extra)[:3]}")
    return model.to(device).eval(), tokenizer


def load_for_inference(uri: str, storage: Storage | None = None, device: str | torch.device = "cpu") -> tuple[GPT, BpeTokenizer]:
    """The model and tokenizer behind `--checkpoint`: an exported Hugging Face directory, a run's
    output (its newest complete checkpoint) or one checkpoint folder."""
    storage = storage or Storage()
    if is_exported(uri, storage):
        return load_exported(uri, storage, device)
    model, tokenizer, _ = load_model(uri, storage, device)
    return model, tokenizer
