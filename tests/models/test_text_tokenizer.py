"""Tests for the from-scratch word tokenizer (reca.models.text_tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from reca.models.text_tokenizer import (
    BOI,
    EOI,
    EOS,
    IMAGE_PLACEHOLDER,
    SPECIAL_TOKENS,
    UNK,
    build_word_tokenizer,
    split_words,
)

TEXTS = [
    "A red circle and a blue square.",
    "Two yellow triangles, left of a green circle!",
    "What colour is the square?",
]


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer(TEXTS)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_vocabulary_covers_every_word_of_the_texts(tok) -> None:
    for text in TEXTS:
        ids = _ids(tok, text)
        assert tok.unk_token_id not in ids
        assert tok.convert_ids_to_tokens(ids) == split_words(text)


def test_chat_template_renders_without_unknown_tokens(tok) -> None:
    rendered = tok.apply_chat_template([{"role": "user", "content": "a red circle"}], add_generation_prompt=True,
                                       tokenize=False)
    assert tok.unk_token_id not in tok(rendered, add_special_tokens=False).input_ids


def test_vocab_is_specials_then_sorted_words(tok) -> None:
    vocab = tok.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    words = sorted({w for t in [*TEXTS, ":"] for w in split_words(t)})  # ":" from the chat template
    assert [vocab[w] for w in words] == list(range(len(SPECIAL_TOKENS), len(SPECIAL_TOKENS) + len(words)))
    assert len(tok) == len(SPECIAL_TOKENS) + len(words)


def test_case_is_normalised(tok) -> None:
    assert _ids(tok, "RED Circle") == _ids(tok, "red circle")
    assert tok.unk_token_id not in _ids(tok, "RED Circle")


def test_unknown_words_map_to_unk(tok) -> None:
    ids = _ids(tok, "a purple hexagon")
    assert tok.convert_ids_to_tokens(ids) == ["a", UNK, UNK]
    assert ids[1] == ids[2] == tok.unk_token_id == SPECIAL_TOKENS.index(UNK)


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_tokens_are_single_ids(tok, special: str) -> None:
    ids = _ids(tok, special)
    assert ids == [SPECIAL_TOKENS.index(special)]
    assert ids[0] in tok.all_special_ids


def test_consecutive_image_placeholders_each_become_one_id(tok) -> None:
    text = f"{BOI}{IMAGE_PLACEHOLDER * 5}{EOI} red circle"
    ids = _ids(tok, text)
    ph = tok.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    assert ids.count(ph) == 5
    assert tok.convert_ids_to_tokens(ids) == [BOI] + [IMAGE_PLACEHOLDER] * 5 + [EOI, "red", "circle"]


def test_pad_bos_eos_are_set_and_padding_is_left(tok) -> None:
    assert tok.pad_token_id == SPECIAL_TOKENS.index("<pad>")
    assert tok.bos_token_id == SPECIAL_TOKENS.index("<bos>")
    assert tok.eos_token_id == SPECIAL_TOKENS.index(EOS)
    batch = tok(["red", "a red circle"], padding=True, add_special_tokens=False)
    assert batch["input_ids"][0][:2] == [tok.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0, 1]


def test_chat_template_renders_janus_format(tok) -> None:
    messages = [
        {"role": "user", "content": "Describe the image."},
        {"role": "assistant", "content": "A red circle."},
        {"role": "user", "content": "Draw a blue square."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|User|>: Describe the image.\n\n"
        "<|Assistant|>: A red circle.<eos>"
        "<|User|>: Draw a blue square.\n\n"
        "<|Assistant|>:"
    )
    no_prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=False)
    assert no_prompt == "<|User|>: Describe the image.\n\n"


def test_save_pretrained_round_trips_ids_exactly(tok, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    samples = [
        *TEXTS,
        "a purple hexagon",
        f"<|User|>: {BOI}{IMAGE_PLACEHOLDER * 3}{EOI} what colour is the circle?\n\n<|Assistant|>:",
    ]
    for text in samples:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.chat_template == tok.chat_template
    assert loaded.padding_side == "left"
    assert set(loaded.all_special_tokens) == set(tok.all_special_tokens)
    messages = [{"role": "user", "content": "red circle"}]
    assert loaded.apply_chat_template(messages, tokenize=False) == tok.apply_chat_template(
        messages, tokenize=False
    )


def test_punctuation_runs_in_texts_are_covered() -> None:
    texts = ["Is it red?!", "A circle... and a square."]
    tok = build_word_tokenizer(texts)
    for text in texts:
        assert tok.unk_token_id not in _ids(tok, text)
