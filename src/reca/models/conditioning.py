"""Turning a :class:`~reca.models.base.Condition` into token rows: shared by the adapters.

Every adapter that reads its condition through a language model does the same
four things, which live here once:

* chat-format a prompt with the model's own chat template, with a block of
  image placeholder tokens where ``h_v`` goes (:class:`ChatPrompter`);
* apply classifier-free-guidance dropout: a dropped sample reads the
  unconditional prompt, with neither its text nor its image
  (:func:`effective_rows`);
* (stacking [conditional; unconditional] for guided sampling is
  :meth:`Condition.with_unconditional`; the two halves of the prediction
  combine in :func:`reca.models.sampling.guided_logits`);
* write ``h_v`` into the placeholder positions of the token embeddings
  (:func:`splice_image_embeddings`);
* pad rows of token ids into a batch, with captioning labels when the answer is
  supervised, and score them (:func:`pad_rows`, :func:`positions_from_mask`,
  :func:`caption_batch`, :func:`next_token_loss`).

Which embeddings fill the placeholders, and what the model does with the
sequence, stays in each adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from reca.models.base import Condition

#: what a sample whose condition was dropped reads (the unconditional prompt)
UNCONDITIONAL_TEXT = ""
#: label of positions that carry no loss (transformers' convention)
IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptRow:
    """One sample's prompt after dropout: its text, and how many image embeddings are spliced in (0: none)."""

    text: str
    image_tokens: int


def effective_rows(condition: Condition) -> tuple[list[PromptRow], torch.Tensor | None]:
    """Per-sample prompts after condition dropout, and ``h_v`` of the samples that keep their image.

    Args:
        condition: texts, optional ``h_v`` (B, N, D) and optional dropout mask (B,).

    Returns:
        One :class:`PromptRow` per sample (dropped samples read
        :data:`UNCONDITIONAL_TEXT` without an image) and the image embeddings
        of the kept samples in batch order, or ``None`` when no sample keeps one.
    """
    n = len(condition.texts)
    drop = condition.drop if condition.drop is not None else torch.zeros(n, dtype=torch.bool)
    has_image = condition.image_embeddings is not None
    image_tokens = condition.image_embeddings.shape[1] if has_image else 0
    rows = [
        PromptRow(UNCONDITIONAL_TEXT, 0) if dropped else PromptRow(text, image_tokens)
        for text, dropped in zip(condition.texts, drop.tolist(), strict=True)
    ]
    kept = None
    if has_image and not bool(drop.all()):
        kept = condition.image_embeddings[~drop.to(condition.image_embeddings.device)]
    return rows, kept


class ChatPrompter:
    """Token ids of a chat-formatted user turn, with an optional image block before the text.

    The image block is ``image_start + image_token * num_image_tokens +
    image_end`` (for example Qwen2.5-VL's ``<|vision_start|><|image_pad|>...
    <|vision_end|>``, or ``<begin_of_image><image_placeholder>...`` for the word
    tokenizer of the default world); the adapter later replaces the
    placeholder embeddings by ``h_v``. A tokenizer without a chat template
    renders the turn through ``plain_format`` (``{content}`` is the image block
    and text). Results are cached: templates and captions repeat every step.

    Chat templates take the message content in one of two layouts: a string
    (Qwen2.5-VL's, the default world's) or a list of typed parts (what
    transformers 5 writes for a Janus processor: ``{"type": "image"}`` renders
    one placeholder that the processor expands). The string layout is tried
    first; a template that drops the text or the placeholders from it is
    rendered with parts instead, and the one placeholder it writes is expanded
    to the image block. A prompt that still lacks its text or its image slots
    is an error naming ``template_source``, never a silent empty prompt.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        image_token: str,
        num_image_tokens: int,
        image_start: str = "",
        image_end: str = "",
        plain_format: str = "{content}",
        template_source: str = "the tokenizer's chat template",
    ) -> None:
        image_id = tokenizer.convert_tokens_to_ids(image_token)
        if image_id is None or image_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no image placeholder token {image_token!r}")
        self.tokenizer = tokenizer
        self.image_token_id = int(image_id)
        self.image_token = image_token
        self.image_start = image_start
        self.image_end = image_end
        self.num_image_tokens = num_image_tokens
        self.plain_format = plain_format
        self.template_source = template_source
        self._cache: dict[tuple[str, int], tuple[int, ...]] = {}

    def ids(self, text: str, image_tokens: int) -> tuple[int, ...]:
        """Token ids of the user turn plus the assistant's generation prompt.

        ``image_tokens`` placeholders come first (0: a text-only turn); the
        understanding encoder's count is :attr:`num_image_tokens`, a latent
        condition brings its own.
        """
        key = (text, image_tokens)
        if key not in self._cache:
            self._cache[key] = self._render(text, image_tokens)
        return self._cache[key]

    def _render(self, text: str, image_tokens: int) -> tuple[int, ...]:
        block = self.image_start + self.image_token * image_tokens + self.image_end if image_tokens else ""
        content = f"{block}\n{text}" if block else text
        tok = self.tokenizer
        if not tok.chat_template:
            rendered = self.plain_format.format(content=content)
        else:
            rendered = self._chat([{"role": "user", "content": content}])
            if not self._keeps(rendered, text, block):
                parts = [{"type": "image"}] * bool(image_tokens) + [{"type": "text", "text": text}]
                rendered = self._expand_image_part(self._chat([{"role": "user", "content": parts}]), block)
            if not self._keeps(rendered, text, block):
                raise ValueError(
                    f"{self.template_source}: the rendered prompt lost its text or its {image_tokens} image slots "
                    f"(got {rendered[:200]!r}); the template must render a user message's text and image, as a "
                    "string or as a list of {'type': 'image'} / {'type': 'text'} parts")
        ids = list(tok(rendered, add_special_tokens=False).input_ids)
        # Templates differ on BOS: add it once when the tokenizer has one and the template did not.
        if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
            ids.insert(0, tok.bos_token_id)
        if ids.count(self.image_token_id) != image_tokens:
            raise ValueError(
                f"the chat template kept {ids.count(self.image_token_id)} of {image_tokens} image "
                "placeholders: the tokenizer must treat the placeholder as one special token"
            )
        return tuple(ids)

    def _chat(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _keeps(self, rendered: str, text: str, block: str) -> bool:
        """Whether a rendered prompt holds the text and the whole image block (or no block was asked for)."""
        has_block = block in rendered if block else self.image_token not in rendered
        return text.strip() in rendered and has_block

    def _expand_image_part(self, rendered: str, block: str) -> str:
        """The one placeholder a parts-layout template writes for ``{"type": "image"}``, made the image block."""
        if not block or rendered.count(self.image_token) != 1:
            return rendered
        wrapped = self.image_start + self.image_token + self.image_end
        if self.image_start and wrapped in rendered:
            return rendered.replace(wrapped, block)
        return rendered.replace(self.image_token, block)

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of a supervised answer, ending in EOS."""
        ids = list(self.tokenizer(" " + answer, add_special_tokens=False).input_ids)
        return [*ids, self.tokenizer.eos_token_id]


def splice_image_embeddings(embeds: torch.Tensor, ids: torch.Tensor, image_token_id: int,
                            image_embeddings: torch.Tensor | None) -> torch.Tensor:
    """Token embeddings (B, L, D) with ``h_v`` (B', N, D) written into the image placeholder positions.

    Rows with placeholders take the image embeddings in batch order, so
    ``image_embeddings`` holds one entry per row that has an image block.
    """
    slots = ids == image_token_id
    if image_embeddings is None:
        if bool(slots.any()):
            raise ValueError("the prompt has image placeholders but no image embeddings were given")
        return embeds
    if int(slots.sum()) != image_embeddings.shape[0] * image_embeddings.shape[1]:
        raise ValueError(f"{int(slots.sum())} image placeholders for image embeddings of shape "
                         f"{tuple(image_embeddings.shape[:2])}")
    return embeds.masked_scatter(slots.unsqueeze(-1), image_embeddings.to(embeds.dtype))


def pad_rows(rows: Sequence[Sequence[int]], pad_value: int, device: torch.device | str = "cpu", *,
             side: Literal["left", "right"] = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad rows of ids into (B, L) ids and a (B, L) attention mask.

    Left padding (the default) puts every row's last token in the last column,
    which is where appended query tokens or the next generated token go.
    """
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_value, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
            ids[i, span] = torch.as_tensor(row, dtype=torch.long)
            mask[i, span] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding: 0 at each row's first real token."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def caption_batch(prompter: ChatPrompter, instructions: Sequence[str], captions: Sequence[str], pad_id: int,
                  device: torch.device | str = "cpu", *, side: Literal["left", "right"] = "left"
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Captioning rows ``[image + instruction prompt] + caption + EOS``: ids, mask and labels.

    Labels are :data:`IGNORE_INDEX` everywhere but the caption and its EOS, so
    a next-token loss on ``labels[:, 1:]`` supervises exactly the answer.
    """
    prompts = [list(prompter.ids(instruction, prompter.num_image_tokens)) for instruction in instructions]
    answers = [prompter.answer_ids(caption) for caption in captions]
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} instructions for {len(answers)} captions")
    ids, mask = pad_rows([p + a for p, a in zip(prompts, answers, strict=True)], pad_id, device, side=side)
    labels, _ = pad_rows([[IGNORE_INDEX] * len(p) + a for p, a in zip(prompts, answers, strict=True)],
                         IGNORE_INDEX, device, side=side)
    return ids, mask, labels


def next_token_loss(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, labels: torch.Tensor
                    ) -> torch.Tensor:
    """Next-token cross-entropy of the supervised positions of ``hidden`` (B, L, D) against ``labels`` (B, L).

    The vocabulary ``head`` runs only where there is a label: a caption is a
    few dozen of a prompt's ~600 positions (576 of them image slots), and
    Janus-Pro's 102,400-word head at every position is about 3 GB of logits per
    GPU at batch 4.
    """
    targets = labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][supervised])
    return F.cross_entropy(logits.float(), targets[supervised])
