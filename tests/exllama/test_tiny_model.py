"""The tiny model's tokenizer, which the GPU tests and the CPU tier load into ExLlamaV2: it must
have a token for "\\n" (ExLlamaV2's tokenizer deduces the newline character from one at load) and
every id must decode to clean text (a U+FFFD piece makes the dynamic generator hold text back and
skip its stop-string checks). Needs only the tokenizers library."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from tests.exllama.tiny_model import ALPHABET, SPECIAL_TOKENS, VOCAB, write_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    model_dir = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(model_dir)
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


def test_newline_space_and_tab_have_tokens(tokenizer: Tokenizer) -> None:
    for char in ("\n", " ", "\t"):
        ids = tokenizer.encode(char, add_special_tokens=False).ids
        assert len(ids) == 1, char
        assert tokenizer.decode(ids) == char


def test_every_id_decodes_to_clean_text(tokenizer: Tokenizer) -> None:
    size = tokenizer.get_vocab_size()
    assert len(SPECIAL_TOKENS) < size <= VOCAB
    pieces = [tokenizer.decode([i]) for i in range(len(SPECIAL_TOKENS), size)]
    assert all(pieces)
    assert not [p for p in pieces if "\ufffd" in p or set(p) - set(ALPHABET)]


def test_text_round_trips(tokenizer: Tokenizer) -> None:
    text = "[user] Pack my box\nwith five dozen liquor jugs!\t(yes) {no} ~^`|\\"
    assert tokenizer.decode(tokenizer.encode(text).ids) == text
