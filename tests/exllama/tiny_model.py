"""A tiny random-weight Llama written to a directory: config, FP16 weights, tokenizer and chat
template, everything ExLlamaV2 reads. Built at test time (no download) for the GPU tests and the
CPU tier.

The tokenizer is a byte-level BPE whose alphabet is printable ASCII plus tab and newline, and only
that: every id decodes to clean text. ExLlamaV2's tokenizer needs a token for "\\n" at load (it
deduces the newline character from one), and a token that decodes to U+FFFD (a lone byte of a
multi-byte character) makes the dynamic generator hold text back and skip its stop-string checks.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

HIDDEN = 256
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 512
LAYERS = 2
VOCAB = 512  # a multiple of 32; the trained tokenizer uses fewer ids, the rest are masked
MAX_POSITIONS = 2048  # a multiple of the 256-token cache page
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
BOS_ID, EOS_ID = 1, 2
#: Written into tokenizer_config.json: the template writes the BOS itself, as Llama 3's does.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '[' + message['role'] + '] ' + message['content'] | trim + eos_token + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '[assistant] ' }}{%- endif %}"
)

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.\nPack my box with five dozen liquor jugs!\n",
    "How vexingly quick daft zebras jump; 0123456789.\n",
    "Sphinx of black quartz, judge my vow? (yes) [no] {maybe}\n\n",
    "A prompt endpoint answers with text: streaming, batching & stopping.\n\tIndented, too.\n",
] * 20

#: Every character a token may hold: printable ASCII, tab and newline (one byte each).
ALPHABET = string.printable


def byte_level_alphabet(chars: str = ALPHABET) -> list[str]:
    """``chars`` as ByteLevel writes them (" " is "Ġ", "\\n" is "Ċ")."""
    from tokenizers import pre_tokenizers

    mapping = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return [mapping.pre_tokenize_str(char)[0][0] for char in chars]


def write_tokenizer(model_dir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 64,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=byte_level_alphabet(),
        limit_alphabet=len(ALPHABET),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    assert tokenizer.get_vocab_size() <= VOCAB
    tokenizer.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )


def write_config(model_dir: Path) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    (model_dir / "config.json").write_text(json.dumps(config))


def write_weights(model_dir: Path) -> None:
    """Random FP16 weights under the Hugging Face Llama tensor names ExLlamaV2 loads."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1234)

    def normal(*shape: int, std: float = 0.02) -> Any:
        return (rng.standard_normal(shape) * std).astype(np.float16)

    def ones(size: int) -> Any:
        return np.ones(size, dtype=np.float16)

    tensors: dict[str, Any] = {
        "model.embed_tokens.weight": normal(VOCAB, HIDDEN),
        "model.norm.weight": ones(HIDDEN),
    }
    head = normal(VOCAB, HIDDEN, std=0.5)  # wide logits: special tokens (zero rows) never win
    head[: len(SPECIAL_TOKENS)] = 0
    tensors["lm_head.weight"] = head
    for layer in range(LAYERS):
        prefix = f"model.layers.{layer}."
        tensors |= {
            prefix + "input_layernorm.weight": ones(HIDDEN),
            prefix + "post_attention_layernorm.weight": ones(HIDDEN),
            prefix + "self_attn.q_proj.weight": normal(HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.k_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.v_proj.weight": normal(KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + "self_attn.o_proj.weight": normal(HIDDEN, HEADS * HEAD_DIM),
            prefix + "mlp.gate_proj.weight": normal(INTERMEDIATE, HIDDEN),
            prefix + "mlp.up_proj.weight": normal(INTERMEDIATE, HIDDEN),
            prefix + "mlp.down_proj.weight": normal(HIDDEN, INTERMEDIATE),
        }
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def build_tiny_model(model_dir: Path) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    write_tokenizer(model_dir)
    write_config(model_dir)
    write_weights(model_dir)
    return model_dir
