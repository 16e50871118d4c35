"""The Hugging Face export, checked against transformers itself: logits and greedy continuations
of trained models (Qwen3 and Llama, tied and untied, grouped-query), the tokenizer and chat
template on real conversations, the way back to our GPT, and the `export-hf` command."""

from __future__ import annotations

import gzip
import json
import re

import pytest
import torch

from flows.cli import main
from infra.settings.train import ModelSettings
from infra.storage import Storage
from model.checkpoint import model_tensors, save_checkpoint
from model.export import (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    TOKENIZER_CONFIG_FILE,
    WEIGHTS_FILE,
    ExportError,
    export_model,
    load_exported,
    load_for_inference,
)
from model.gpt import GPT, GPTConfig
from model.tokenizer import BOS, IM_END, BpeTokenizer

transformers = pytest.importorskip("transformers")  # the `test` extra

VARIANTS = {  # name: (qk_norm, tie_embeddings, n_kv_head of 4 heads)
    "qwen3": (True, False, 4),
    "qwen3-tied-gqa": (True, True, 2),
    "llama-gqa": (False, False, 1),
    "llama-tied": (False, True, 4),
}


@pytest.fixture(scope="module")
def texts(realdata) -> list[str]:
    """Real web text (C4): the first 250 documents to train on, the last 50 held out."""
    with open(realdata / "pretrain_text" / "llama_factory_c4_demo.jsonl") as lines:
        return [json.loads(line)["text"] for line in lines]


@pytest.fixture(scope="module")
def tokenizer(texts) -> BpeTokenizer:
    return BpeTokenizer.train(texts[:250], vocab_size=1024)


def _trained(tokenizer: BpeTokenizer, texts: list[str], qk_norm: bool, tie: bool, n_kv_head: int, steps: int = 30) -> GPT:
    """A tiny GPT after `steps` AdamW steps on real text, so the weights are far from their init."""
    settings = ModelSettings(n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=64, seq_len=96, qk_norm=qk_norm, tie_embeddings=tie)
    model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=7)
    stream = torch.tensor([token for text in texts[:250] for token in [tokenizer.bos_id, *tokenizer.encode(text)]])
    windows = stream[: len(stream) // 65 * 65].view(-1, 65)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        batch = windows[torch.randint(0, len(windows), (8,), generator=generator)]
        loss = model(batch[:, :-1], batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses  # it learned: these are trained weights
    return model.eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request, tokenizer, texts, tmp_path_factory):
    model = _trained(tokenizer, texts, *VARIANTS[request.param])
    directory = tmp_path_factory.mktemp(request.param)
    export_model(model, tokenizer, str(directory))
    return request.param, model, directory


@torch.no_grad()
def test_transformers_computes_the_same_logits(exported, tokenizer, texts):
    name, model, directory = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if name.startswith("qwen3") else "LlamaForCausalLM")
    assert hf.dtype == torch.float32 and hf.config.tie_word_embeddings == model.config.tie_embeddings
    held_out = torch.tensor([token for text in texts[250:] for token in [tokenizer.bos_id, *tokenizer.encode(text)]])
    batch = held_out[: 4 * 96].view(4, 96)  # documents of the held-out texts, across their <|bos|> borders
    difference = (model(batch) - hf(batch).logits).abs().max().item()
    print(f"{name}: max abs logit difference {difference:.2e}")
    assert difference < 1e-4


@torch.no_grad()
def test_transformers_generates_the_same_greedy_continuation(exported, tokenizer, texts):
    name, model, directory = exported
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    stop = set(json.loads((directory / GENERATION_CONFIG_FILE).read_text())["eos_token_id"])
    assert stop == {tokenizer.special_ids[IM_END], tokenizer.bos_id}
    for text in texts[250:252]:
        prompt = [tokenizer.bos_id, *tokenizer.encode(text)[:12]]
        ours = list(prompt)
        while len(ours) < len(prompt) + 24:  # the plainest greedy loop: full forward, argmax, stop ids
            ours.append(int(model(torch.tensor([ours]))[0, -1].argmax()))
            if ours[-1] in stop:
                break
        theirs = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=24)
        assert theirs[0].tolist() == ours, name
        assert len(ours) > len(prompt) + 5  # a real continuation, not an immediate stop


def test_export_round_trips_to_the_same_model_and_tokenizer(exported, tokenizer):
    _, model, directory = exported
    loaded, loaded_tokenizer = load_exported(str(directory))
    assert loaded.config == model.config
    assert loaded_tokenizer.sha256 == tokenizer.sha256  # the export's bos post-processor is dropped again
    for (key, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), key
    if model.config.tie_embeddings:
        assert loaded.lm_head.weight is loaded.embed_tokens.weight


def test_config_files_say_what_transformers_and_servers_need(tokenizer, texts, tmp_path):
    model = GPT(GPTConfig.from_settings(ModelSettings(n_layer=1, n_head=2, n_kv_head=1, n_embd=32, seq_len=80), tokenizer.vocab_size))
    export_model(model, tokenizer, str(tmp_path), dtype="bfloat16")
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["max_position_embeddings"] == 80
    assert config["dtype"] == "bfloat16" and config["num_key_value_heads"] == 1 and config["head_dim"] == 16
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        tokenizer.bos_id, tokenizer.special_ids[IM_END], tokenizer.bos_id)
    hf_config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf_config.rope_parameters["rope_theta"] == model.config.rope_theta
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert hf.dtype == torch.bfloat16
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tokenizer.model_max_length == 80 and hf_tokenizer.pad_token == BOS and hf_tokenizer.eos_token == IM_END
    assert set(tokenizer.special_ids) <= set(hf_tokenizer.all_special_tokens)
    assert json.loads((tmp_path / TOKENIZER_CONFIG_FILE).read_text())["chat_template"].startswith("{{ bos_token }}")


# -- the tokenizer and the chat template ---------------------------------------------------------


def _real_conversations(realdata) -> list[list[dict[str, str]]]:
    """Conversations from three real sources, some with a system turn, in the messages form."""
    chat = realdata / "chat"
    conversations = []
    for row in json.loads((chat / "llama_factory" / "alpaca_en_demo.json").read_text())[:40]:
        user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
        conversations.append([{"role": "system", "content": "You are a helpful assistant."},
                              {"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}])
    with open(chat / "oasst2_openpaws" / "oasst2_filtered.jsonl") as lines:
        for line in lines:  # the first path down each tree that has replies: many languages and scripts
            node, turns = json.loads(line)["prompt"], []
            while node:
                turns.append({"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]})
                node = (node.get("replies") or [None])[0]
            conversations += [turns] if len(turns) >= 2 else []
    with gzip.open(chat / "hh_rlhf" / "harmless-base_test.jsonl.gz", "rt") as lines:
        for line, _ in zip(lines, range(40)):  # "\n\nHuman: ... \n\nAssistant: ..." transcripts, multi-turn
            pieces = re.split(r"\n\n(Human|Assistant): ", json.loads(line)["chosen"])[1:]
            conversations.append([{"role": "user" if speaker == "Human" else "assistant", "content": text}
                                  for speaker, text in zip(pieces[::2], pieces[1::2])])
    return [turns for turns in conversations if len(turns) >= 2]


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    settings = ModelSettings(n_layer=1, n_head=2, n_kv_head=2, n_embd=32, seq_len=16_384)  # room for the longest conversation
    model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size))
    export_model(model, tokenizer, str(directory))
    return transformers.AutoTokenizer.from_pretrained(directory)


def test_chat_template_gives_our_ids_on_real_conversations(realdata, tokenizer, hf_tokenizer):
    conversations = _real_conversations(realdata)
    assert len(conversations) > 100
    for messages in conversations:
        ours = tokenizer.encode_chat(messages)
        assert hf_tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"] == ours
        assert hf_tokenizer.apply_chat_template(messages, tokenize=False) == tokenizer.decode(ours)
        opened = hf_tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True)["input_ids"]
        assert opened == tokenizer.encode_chat(messages[:-1], open_turn="assistant")


def test_plain_text_encodes_and_decodes_alike(realdata, tokenizer, hf_tokenizer, texts):
    for text in [*texts[250:], *[m["content"] for c in _real_conversations(realdata)[40:80] for m in c]]:
        ours = tokenizer.encode(text)
        assert hf_tokenizer(text)["input_ids"] == [tokenizer.bos_id, *ours]  # a document starts with <|bos|>
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ours
        assert hf_tokenizer.decode(ours) == text == tokenizer.decode(ours)


def test_special_token_strings_inside_messages_differ_as_documented(tokenizer, hf_tokenizer):
    """transformers tokenizes the rendered template, so "<|im_end|>" typed in a message becomes the
    special token there; ours stays plain text (model/export.py's docstring says so)."""
    messages = [{"role": "user", "content": "what does <|im_end|> mean?"}]
    theirs = hf_tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    ours = tokenizer.encode_chat(messages)
    assert theirs.count(tokenizer.special_ids[IM_END]) == 2 and ours.count(tokenizer.special_ids[IM_END]) == 1
    assert hf_tokenizer.decode(theirs) == tokenizer.decode(ours)  # the same text either way


# -- the command and the loaders -----------------------------------------------------------------


def _checkpoint(tokenizer, storage: Storage, run: str) -> GPT:
    settings = ModelSettings(n_layer=1, n_head=2, n_kv_head=1, n_embd=32, seq_len=64, tie_embeddings=True)
    model = GPT(GPTConfig.from_settings(settings, tokenizer.vocab_size), seed=2).eval()
    tensors = {**model_tensors(model), "score.weight": torch.ones(1, 32)}  # a reward head stays behind
    save_checkpoint(storage, run, 3, tensors, model.config, tokenizer, "sft")
    return model


def test_export_hf_command_writes_a_directory_transformers_loads(tokenizer, tmp_path, capsys):
    model = _checkpoint(tokenizer, Storage(), str(tmp_path / "run"))
    out = tmp_path / "hf"
    assert main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--output", str(out)]) == 0
    assert "sft step 3" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, GENERATION_CONFIG_FILE, "tokenizer.json", TOKENIZER_CONFIG_FILE])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    idx = torch.tensor([tokenizer.encode_chat([{"role": "user", "content": "hello"}], open_turn="assistant")])
    with torch.no_grad():
        assert (hf(idx).logits - model(idx)).abs().max() < 1e-4
    for uri in (str(out), str(tmp_path / "run")):  # either kind of --checkpoint, one loader
        loaded, loaded_tokenizer = load_for_inference(uri)
        assert loaded_tokenizer.sha256 == tokenizer.sha256 and torch.equal(loaded.norm.weight, model.norm.weight)


@pytest.mark.s3
def test_export_hf_command_reads_a_checkpoint_from_object_storage(tokenizer, seaweed, s3_prefix, tmp_path, monkeypatch):
    _checkpoint(tokenizer, Storage(seaweed), s3_prefix + "/run")
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweed.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_access_key.get_secret_value())
    assert main(["export-hf", "--checkpoint", s3_prefix + "/run", "--output", str(tmp_path / "hf")]) == 0
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").bos_token == BOS


def test_bad_input_is_one_line_and_exit_code_2(tokenizer, tmp_path, capsys):
    assert main(["export-hf", "--checkpoint", str(tmp_path / "nothing"), "--output", str(tmp_path / "hf")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    with pytest.raises(ExportError, match="config.json is missing"):
        load_exported(str(tmp_path))
    _checkpoint(tokenizer, Storage(), str(tmp_path / "run"))
    main(["export-hf", "--checkpoint", str(tmp_path / "run"), "--output", str(tmp_path / "hf")])
    config = json.loads((tmp_path / "hf" / CONFIG_FILE).read_text())
    for change, message in (({"model_type": "mistral"}, "model_type 'mistral'"), ({"head_dim": 128}, "head_dim"),
                            ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rotary scaling"),
                            ({"vocab_size": 99}, "the tokenizer has")):
        (tmp_path / "hf" / CONFIG_FILE).write_text(json.dumps({**config, **change}))
        with pytest.raises(ExportError, match=message):
            load_for_inference(str(tmp_path / "hf"))
