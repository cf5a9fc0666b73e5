"""Write a tiny random-weight Llama model as a GGUF file, for llama.cpp's server in the tests.

Run by the workspace's Python (the ``gguf`` package is a dev dependency):
``python tiny_gguf.py OUT.gguf``. Nothing is downloaded: the vocabulary is the 256 byte tokens
and the SentencePiece space marker, the weights are drawn from a fixed seed.

The attention and MLP outputs are scaled small, so the last layer's state is close to the
current token's embedding, and the output head's row for a token is the embedding of the token
before it in the alphabet: greedy decoding writes the alphabet on from the prompt's last letter
(``"abc"`` goes on ``"defgh"``, ``"xyz"`` goes on ``"abcd"``; anything but a lowercase letter is
followed by ``"a"``). The tests can then say exactly what a reply must be, and an end-of-text
token is never chosen, so replies run to ``max_tokens`` or a stop.

The chat template (``tokenizer.chat_template``, which llama.cpp's server renders) joins the
messages' contents with newlines, so a chat reply goes on from the last message's last letter.
"""

from __future__ import annotations

import itertools
import string
import sys

import gguf
import numpy as np

EMBED = 64
HEADS = 4
FF = 128
LAYERS = 2
CONTEXT = 512
SPECIAL = ["<unk>", "<s>", "</s>"]
SPACE = "\u2581"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}"
    "{% if not loop.last %}\n{% endif %}{% endfor %}"
)


def byte_token(character: str) -> int:
    return len(SPECIAL) + ord(character)


def write(path: str) -> None:
    rng = np.random.default_rng(20261201)
    tokens = [*SPECIAL, *(f"<0x{byte:02X}>" for byte in range(256)), SPACE]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(EMBED)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(EMBED // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([int(kind) for kind in types])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weights(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # The head's row for a token is the state of the token it follows, so that token scores
    # about EMBED and every other about 0 +- sqrt(EMBED). Every token but the letters a-y
    # (bytes, the space marker, "z") is followed by "a": their embeddings share one direction,
    # which is the row of "a". The special tokens follow nothing: zero rows, never chosen.
    letters = string.ascii_lowercase
    embedding = weights(len(tokens), EMBED, scale=1.0)
    to_a = weights(EMBED, scale=1.0)
    embedding[len(SPECIAL) :] = to_a + 0.1 * embedding[len(SPECIAL) :]
    head = np.zeros_like(embedding)
    head[byte_token("a")] = to_a
    for letter, follower in itertools.pairwise(letters):
        embedding[byte_token(letter)] = weights(EMBED, scale=1.0)
        head[byte_token(follower)] = embedding[byte_token(letter)]
    writer.add_tensor("token_embd.weight", embedding)
    for layer in range(LAYERS):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(f"{block}.{name}.weight", weights(EMBED, EMBED))
        writer.add_tensor(f"{block}.attn_output.weight", weights(EMBED, EMBED, scale=1e-3))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(EMBED, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(FF, EMBED))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(FF, EMBED))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(EMBED, FF, scale=1e-3))
    writer.add_tensor("output_norm.weight", np.ones(EMBED, dtype=np.float32))
    writer.add_tensor("output.weight", head)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    write(sys.argv[1])
