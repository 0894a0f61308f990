"""What the masked-token (Show-o) and MAR (Harmon) adapters share: an LLM over [prompt][image block].

Both paradigms run a transformers causal LM over the chat-formatted condition
(template text plus ``h_v``, built by :mod:`reca.models.conditioning`)
followed by one block of image positions, and both predict *masked* image
positions from the visible ones, so:

* the attention is "omni-attention" (Show-o): causal over the text prefix,
  full (bidirectional) inside the image block, which also sees the whole
  prefix. transformers passes a prepared 4D mask through unchanged
  (``masking_utils._preprocess_mask_arguments``), so any causal LM whose
  attention is ``sdpa`` or ``eager`` runs bidirectionally this way;
* training masks a random fraction of the image positions drawn from the
  MaskGIT cosine schedule, and inference decodes iteratively, revealing
  positions so that ``cos(pi/2 * k/K)`` of them stay masked after step k;
* the image-to-text loss and saving the LLM with its tokenizer are identical.

:class:`ImageBlockLMAdapter` holds that shared part; :mod:`reca.models.masked`
and :mod:`reca.models.mar` add their own image representation and head.
"""

from __future__ import annotations

import abc
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from reca.fileio import atomic_dir
from reca.models import text_tokenizer as tt
from reca.models.base import Condition, UMMAdapter
from reca.models.conditioning import (
    ChatPrompter,
    caption_batch,
    effective_rows,
    next_token_loss,
    pad_rows,
    positions_from_mask,
    splice_image_embeddings,
)
from reca.models.registration import ADAPTER_FILE, write_adapter_file

log = logging.getLogger(__name__)
#: attention kernels that take a prepared 4D mask (the bidirectional image block)
BLOCK_MASK_KERNELS = ("sdpa", "eager")


# ------------------------------------------------------------------ schedules


def cosine_mask_ratio(progress: torch.Tensor) -> torch.Tensor:
    """MaskGIT's schedule: the fraction of image positions still masked at ``progress`` in [0, 1]."""
    return torch.cos(progress * math.pi / 2)


def sample_training_mask(batch: int, num_tokens: int, device: torch.device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool (B, T): per sample, a ratio from the cosine schedule at a uniform time, at least one position."""
    progress = torch.rand(batch, generator=generator, device=device)
    counts = torch.ceil(cosine_mask_ratio(progress) * num_tokens).long().clamp(1, num_tokens)
    ranks = torch.rand(batch, num_tokens, generator=generator, device=device).argsort(-1).argsort(-1)
    return ranks < counts[:, None]


def masked_counts(num_tokens: int, steps: int) -> list[int]:
    """Positions still masked after each decoding step: cosine, strictly decreasing, ending at 0.

    Every step reveals at least one position, so there are at most
    ``num_tokens`` steps whatever ``steps`` says.
    """
    counts, remaining = [], num_tokens
    for k in range(1, steps + 1):
        remaining = max(0, min(math.floor(num_tokens * math.cos(math.pi / 2 * k / steps)), remaining - 1))
        counts.append(remaining)
        if remaining == 0:
            break
    return counts


def choose_reveal(still_masked: torch.Tensor, scores: torch.Tensor, keep_masked: int) -> torch.Tensor:
    """Bool (B, T): the masked positions to reveal now, highest ``scores`` first, leaving ``keep_masked``."""
    ranks = scores.masked_fill(~still_masked, float("-inf")).argsort(-1, descending=True).argsort(-1)
    return still_masked & (ranks < still_masked.sum(-1, keepdim=True) - keep_masked)


# ------------------------------------------------------------------ attention


def omni_attention_mask(prefix_mask: torch.Tensor, num_image: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask (B, 1, L, L) for [left-padded causal prefix][bidirectional image block].

    Padding is never attended; a padding query attends to itself only, so no
    softmax row is empty.
    """
    b, p = prefix_mask.shape
    length, device = p + num_image, prefix_mask.device
    valid = torch.cat([prefix_mask.bool(), torch.ones(b, num_image, dtype=torch.bool, device=device)], dim=1)
    idx = torch.arange(length, device=device)
    causal_or_image = (idx[None, :] <= idx[:, None]) | ((idx[:, None] >= p) & (idx[None, :] >= p))
    allowed = (causal_or_image[None] & valid[:, None, :]) | torch.eye(length, dtype=torch.bool, device=device)
    mask = torch.zeros(b, 1, length, length, dtype=dtype, device=device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


# -------------------------------------------------------------------- adapter


class ImageBlockLMAdapter(UMMAdapter):
    """Base of adapters whose LLM reads [condition prefix ending in BOI][bidirectional image block]."""

    def __init__(self, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, num_understanding_tokens: int
                 ) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompter = ChatPrompter(tokenizer, image_token=tt.IMAGE_PLACEHOLDER,
                                     num_image_tokens=num_understanding_tokens)
        boi = tokenizer.convert_tokens_to_ids(tt.BOI)
        if boi is None or boi == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {tt.BOI} token; add it as a special token")
        self.boi_id = int(boi)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if llm.config._attn_implementation not in BLOCK_MASK_KERNELS:
            # Flash kernels take no arbitrary mask: the image block would silently turn causal.
            llm.set_attn_implementation("sdpa")

    @property
    def _device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def _dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def _embed(self, ids: torch.Tensor, h_v: torch.Tensor | None) -> torch.Tensor:
        embeds = self.llm.get_input_embeddings()(ids)
        return splice_image_embeddings(embeds, ids, self.prompter.image_token_id, h_v)

    def _prefix(self, condition: Condition) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded condition embeddings (after CFG dropout) ending in ``<begin_of_image>``, and their mask."""
        rows, h_v = effective_rows(condition)
        ids, mask = pad_rows([[*self.prompter.ids(r.text, r.image_tokens), self.boi_id] for r in rows], self.pad_id,
                             self._device)
        return self._embed(ids, h_v), mask

    def _image_hidden(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Run the LLM over [prefix][image block] with omni-attention; return the image block's hidden states."""
        embeds = torch.cat([prefix, image.to(prefix.dtype)], dim=1)
        full = torch.cat([prefix_mask, prefix_mask.new_ones(image.shape[:2])], dim=1)
        out = self.llm.base_model(inputs_embeds=embeds,
                                  attention_mask=omni_attention_mask(prefix_mask, image.shape[1], embeds.dtype),
                                  position_ids=positions_from_mask(full))
        return out.last_hidden_state[:, prefix.shape[1]:]

    def i2t_loss(self, pixels: torch.Tensor, instructions: Sequence[str], captions: Sequence[str]) -> torch.Tensor:
        """Captioning through the same LLM (the shared backbone that λ_i2t keeps from degrading), causal."""
        ids, mask, labels = caption_batch(self.prompter, instructions, captions, self.pad_id, self._device)
        hidden = self.llm.base_model(inputs_embeds=self._embed(ids, self.embed_images(pixels)), attention_mask=mask,
                                     position_ids=positions_from_mask(mask)).last_hidden_state
        return next_token_loss(self.llm.get_output_embeddings(), hidden, labels)

    # ----------------------------------------------------------- save and load
    @classmethod
    def from_pretrained(cls, path: str | Path, *, revision: str | None = None, trust_remote_code: bool = False,
                        dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"
                        ) -> ImageBlockLMAdapter:
        """Load the LLM and tokenizer at the top of ``path``, then the adapter's own parts in subfolders."""
        if attn_implementation not in BLOCK_MASK_KERNELS:
            # Flash kernels take no arbitrary mask: the image block would silently turn causal.
            log.warning("attn_implementation %s cannot take the bidirectional image-block mask of %s; using sdpa",
                        attn_implementation, cls.name)
            attn_implementation = "sdpa"
        llm = AutoModelForCausalLM.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                                   dtype=dtype, attn_implementation=attn_implementation)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        marker = Path(path, ADAPTER_FILE)
        record = json.loads(marker.read_text()) if marker.exists() else {}
        return cls._from_parts(llm, tokenizer, path, record, revision=revision, trust_remote_code=trust_remote_code,
                               dtype=dtype)

    @classmethod
    @abc.abstractmethod
    def _from_parts(cls, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path,
                    record: dict[str, Any], *, revision: str | None, trust_remote_code: bool, dtype: torch.dtype
                    ) -> ImageBlockLMAdapter:
        """Load the parts :meth:`_save_parts` wrote (``record`` is the saved adapter file, if any)."""

    def save_pretrained(self, path: str | Path) -> None:
        """The LLM and tokenizer at the top (AutoModelForCausalLM loads it), each other part in a subfolder."""
        with atomic_dir(path) as tmp:
            self.llm.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            write_adapter_file(tmp, self.name, **self._save_parts(tmp))

    @abc.abstractmethod
    def _save_parts(self, directory: Path) -> dict[str, Any]:
        """Write the adapter's own parts into ``directory``; return what the adapter file records."""
