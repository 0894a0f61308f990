"""Tests for the RecA reconstruction template bank."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from reca.objectives.templates import (
    CAPTION_INSTRUCTIONS,
    RECONSTRUCTION_TEMPLATES,
    TemplateBank,
    load_templates,
)

CONTENT_WORDS = {
    "red", "blue", "green", "yellow", "black", "white", "orange", "purple",
    "circle", "square", "triangle", "rectangle", "cat", "dog", "car", "tree",
    "man", "woman", "person", "people", "house", "sky", "ball", "bird",
}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def test_bank_is_large_and_distinct() -> None:
    assert isinstance(RECONSTRUCTION_TEMPLATES, tuple)
    assert len({_norm(t) for t in RECONSTRUCTION_TEMPLATES}) >= 360
    assert len({_norm(t) for t in RECONSTRUCTION_TEMPLATES}) == len(
        RECONSTRUCTION_TEMPLATES
    )


@pytest.mark.parametrize("bank", [RECONSTRUCTION_TEMPLATES, CAPTION_INSTRUCTIONS])
def test_template_format(bank: tuple[str, ...]) -> None:
    for template in bank:
        assert template.isascii(), template
        assert len(template.split()) <= 16, template
        assert template.endswith((".", "?")), template
        assert template[0].isupper(), template
        assert template == " ".join(template.split()), template
        assert not re.search(r"[{}<>\[\]]", template), template


def test_no_content_words() -> None:
    for template in (*RECONSTRUCTION_TEMPLATES, *CAPTION_INSTRUCTIONS):
        tokens = set(re.findall(r"[a-z]+", template.lower()))
        assert not tokens & CONTENT_WORDS, template


def test_caption_instructions_separate() -> None:
    assert isinstance(CAPTION_INSTRUCTIONS, tuple)
    assert len(set(CAPTION_INSTRUCTIONS)) == len(CAPTION_INSTRUCTIONS) >= 8
    assert CAPTION_INSTRUCTIONS is not RECONSTRUCTION_TEMPLATES


def test_bank_rejects_duplicates_and_empty() -> None:
    with pytest.raises(ValueError, match="Describe  the IMAGE"):
        TemplateBank(["Describe the image.", "Describe  the IMAGE. "])
    with pytest.raises(ValueError):
        TemplateBank([])
    with pytest.raises(ValueError):
        TemplateBank(["Describe the image.", "   "])


def test_default_bank_and_protocol() -> None:
    bank = TemplateBank()
    assert len(bank) == len(RECONSTRUCTION_TEMPLATES)
    assert tuple(bank) == RECONSTRUCTION_TEMPLATES
    small = TemplateBank(["Describe the image.", "What is shown here?"])
    assert len(small) == 2
    assert list(small) == ["Describe the image.", "What is shown here?"]


def test_sample_deterministic_and_covering() -> None:
    bank = TemplateBank()
    a = [bank.sample(random.Random(7)) for _ in range(3)]
    assert len(set(a)) == 1
    r1, r2 = random.Random(123), random.Random(123)
    assert [bank.sample(r1) for _ in range(50)] == [bank.sample(r2) for _ in range(50)]
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert [bank.sample(g1) for _ in range(50)] == [bank.sample(g2) for _ in range(50)]

    rng = random.Random(0)
    draws = [bank.sample(rng) for _ in range(5000)]
    assert all(d in RECONSTRUCTION_TEMPLATES for d in draws)
    assert len(set(draws)) >= 300
    gen = np.random.default_rng(0)
    assert len({bank.sample(gen) for _ in range(5000)}) >= 300


def test_sample_rejects_bad_rng() -> None:
    with pytest.raises(TypeError):
        TemplateBank().sample(42)  # type: ignore[arg-type]


def test_words_vocabulary() -> None:
    vocab = TemplateBank().words()
    assert {"describe", ".", "?", "image"} <= vocab
    assert all(w == w.lower() for w in vocab)
    assert not any(w.endswith((".", "?", ",")) and len(w) > 1 for w in vocab)
    small = TemplateBank(["What's shown, exactly?"]).words()
    assert small == {"what", "'", "s", "shown", ",", "exactly", "?"}


def test_load_templates_default_and_file(tmp_path) -> None:
    assert tuple(load_templates(None)) == RECONSTRUCTION_TEMPLATES
    path = tmp_path / "bank.txt"
    path.write_text(
        "# comment line\n\nDescribe the image.\n   \n  # indented comment\n"
        "What does this picture show?\n",
        encoding="utf-8",
    )
    bank = load_templates(path)
    assert list(bank) == ["Describe the image.", "What does this picture show?"]
    assert list(load_templates(str(path))) == list(bank)


def test_load_templates_file_duplicates(tmp_path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("Describe the image.\ndescribe the image.\n", encoding="utf-8")
    with pytest.raises(ValueError, match="describe the image"):
        load_templates(path)


def test_load_templates_missing_file(tmp_path) -> None:
    missing = tmp_path / "nope" / "templates.txt"
    with pytest.raises(FileNotFoundError) as info:
        load_templates(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "one template per line" in message
