"""Condition -> token rows, shared by the adapters: dropout, CFG stacking, chat prompts, padding, labels."""

from __future__ import annotations

import pytest
import torch

from reca.models import text_tokenizer as tt
from reca.models.base import Condition
from reca.models.conditioning import (
    IGNORE_INDEX,
    UNCONDITIONAL_TEXT,
    ChatPrompter,
    caption_batch,
    effective_rows,
    next_token_loss,
    pad_rows,
    positions_from_mask,
    splice_image_embeddings,
)
from reca_fixtures.models import TEXTS


@pytest.fixture(scope="module")
def prompter() -> ChatPrompter:
    tok = tt.build_word_tokenizer(TEXTS)
    return ChatPrompter(tok, image_token=tt.IMAGE_PLACEHOLDER, image_start=tt.BOI, image_end=tt.EOI,
                        num_image_tokens=3)


def test_dropped_samples_read_the_unconditional_prompt_without_their_image():
    h_v = torch.arange(3.0).view(3, 1, 1).expand(3, 2, 4)
    rows, kept = effective_rows(Condition(texts=["a", "b", "c"], image_embeddings=h_v,
                                          drop=torch.tensor([False, True, False])))
    n = h_v.shape[1]
    assert [(r.text, r.image_tokens) for r in rows] == [("a", n), (UNCONDITIONAL_TEXT, 0), ("c", n)]
    assert torch.equal(kept[:, 0, 0], torch.tensor([0.0, 2.0]))
    _, none = effective_rows(Condition(texts=["a"], image_embeddings=h_v[:1], drop=torch.tensor([True])))
    assert none is None


def test_with_unconditional_stacks_conditional_then_dropped_copies():
    both = Condition(texts=["a", "b"], image_embeddings=torch.ones(2, 1, 4)).with_unconditional()
    assert both.texts == ["a", "b", "a", "b"]
    assert both.drop.tolist() == [False, False, True, True]
    assert both.image_embeddings.shape == (4, 1, 4)


def test_chat_prompt_has_one_bos_and_the_whole_image_block(prompter):
    tok = prompter.tokenizer
    ids = prompter.ids(TEXTS[2], prompter.num_image_tokens)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids.count(prompter.image_token_id) == 3
    start = ids.index(tok.convert_tokens_to_ids(tt.BOI))
    assert ids[start + 4] == tok.convert_tokens_to_ids(tt.EOI)
    assert prompter.image_token_id not in prompter.ids(TEXTS[2], 0)
    assert tok.convert_tokens_to_ids(tt.ASSISTANT) in prompter.ids(TEXTS[2], 0)[-2:]  # generation prompt


def test_unknown_image_token_is_rejected():
    with pytest.raises(ValueError, match="placeholder"):
        ChatPrompter(tt.build_word_tokenizer(TEXTS), image_token="<nope>", num_image_tokens=1)


def test_left_padding_aligns_row_ends_and_masks_padding():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_value=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions_from_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_right_padding_aligns_row_starts():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_value=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_tokenizer_without_chat_template_renders_through_the_plain_format():
    tok = tt.build_word_tokenizer(TEXTS)
    tok.chat_template = None
    janus = ChatPrompter(tok, image_token=tt.IMAGE_PLACEHOLDER, num_image_tokens=2,
                         plain_format=f"{tt.USER}: {{content}}\n\n{tt.ASSISTANT}:")
    ids = janus.ids(TEXTS[0], 2)
    assert tok.decode(ids) == tok.decode(tok(f"{tt.BOS}{tt.USER}: " + tt.IMAGE_PLACEHOLDER * 2 + f"\n{TEXTS[0]}\n\n"
                                              f"{tt.ASSISTANT}:", add_special_tokens=False).input_ids)
    assert ids[0] == tok.bos_token_id and ids.count(janus.image_token_id) == 2


def test_caption_labels_supervise_exactly_the_answer_and_eos(prompter):
    tok = prompter.tokenizer
    ids, mask, labels = caption_batch(prompter, [TEXTS[3]] * 2, [TEXTS[0], TEXTS[1]], tok.pad_token_id)
    for row in range(2):
        supervised = labels[row][labels[row] != IGNORE_INDEX]
        assert supervised.tolist() == prompter.answer_ids([TEXTS[0], TEXTS[1]][row])
        assert torch.equal(ids[row][labels[row] != IGNORE_INDEX], supervised)
        assert supervised[-1] == tok.eos_token_id
    assert (mask == 0).sum() > 0  # the shorter caption is padded


def test_next_token_loss_ignores_unlabelled_positions_and_runs_the_head_only_where_labels_are():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 2]])
    hidden = torch.zeros(1, 3, 3)
    hidden[0, 1, 2] = 10.0  # position 1 predicts label 2 confidently
    hidden[0, 0] = torch.tensor([5.0, -5.0, 0.0])  # an unlabelled position may predict anything
    rows = []
    head = lambda h: rows.append(h.shape[0]) or h  # noqa: E731 (an identity head that counts its rows)
    assert next_token_loss(head, hidden, labels).item() < 1e-3
    assert rows == [1]


def test_splice_writes_h_v_into_placeholders_in_batch_order():
    ids = torch.tensor([[1, 9, 9], [1, 2, 3], [9, 9, 4]])
    embeds = torch.zeros(3, 3, 2)
    h_v = torch.tensor([[[1.0, 1.0], [2.0, 2.0]], [[3.0, 3.0], [4.0, 4.0]]])
    out = splice_image_embeddings(embeds, ids, 9, h_v)
    assert out[0, 1:].tolist() == [[1.0, 1.0], [2.0, 2.0]]
    assert out[2, :2].tolist() == [[3.0, 3.0], [4.0, 4.0]]
    assert out[1].abs().sum() == 0
    with pytest.raises(ValueError, match="placeholders"):
        splice_image_embeddings(embeds, ids, 9, h_v[:1])
    with pytest.raises(ValueError, match="no image embeddings"):
        splice_image_embeddings(embeds, ids, 9, None)
