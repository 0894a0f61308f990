"""A word-level text tokenizer for UMMs trained from scratch (the embedded default).

Real checkpoints bring their own tokenizer; a model built from scratch on the
synthetic world needs one that can be made offline in milliseconds. The result
is a standard ``PreTrainedTokenizerFast`` with a chat template, saved and
loaded with ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any
other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<bos>", "<eos>", "<pad>", "<unk>"
IMAGE_PLACEHOLDER, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
USER, ASSISTANT = "<|User|>", "<|Assistant|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, IMAGE_PLACEHOLDER, BOI, EOI, USER, ASSISTANT]

# Janus-style conversation: "<|User|>: ...\n\n<|Assistant|>: ...".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<|User|>: {{ message['content'] }}\n\n"
    "{% else %}<|Assistant|>: {{ message['content'] }}<eos>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)

_WORD = re.compile(r"\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-case words and punctuation marks, as the tokenizer's pre-tokenizer splits them."""
    return _WORD.findall(text.lower())


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Build a word-level tokenizer whose vocabulary covers every word in ``texts``."""
    # ":" comes from the chat template itself ("<|User|>: ..."), not from the texts.
    words = sorted({w for t in [*texts, ":"] for w in split_words(t)})
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    # Split on whitespace, then every punctuation mark on its own, exactly as split_words
    # does, so a run like "?!" is two known tokens rather than one unknown one.
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[IMAGE_PLACEHOLDER, BOI, EOI, USER, ASSISTANT],
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
