"""Write a random-weight Janus-Pro directory in the published transformers layout, at its real widths.

No weights can be downloaded here, so the pipeline is run at real size on a
stand-in: transformers' ``JanusForConditionalGeneration`` at Janus-Pro's
published widths (hidden 2048 / 4096, SigLIP-L at 384 px, the 16,384-code VQ),
the depth cut by ``--layers`` where memory requires, saved as a published
checkpoint is: safetensors in bf16, a tokenizer that names its image tokens,
and a processor with a chat template that takes typed message parts (what
transformers 5 writes for a ``JanusProcessor``). Point ``model.pretrained`` at
the directory, with ``model.image_tokenizer: janus_vq`` and 384 px in
``degrade``.

The tokenizer is a word tokenizer over the texts the pipeline will read (the
template bank, the captioning instructions, the captions and GenEval's
words), standing in for Janus's 100k-token BPE; the vocabulary of the model
keeps the published size.

    python scripts/janus_pro_stand_in.py --out stand-ins/janus-pro-1b --layers 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import JanusForConditionalGeneration, JanusProcessor, PreTrainedTokenizerFast
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

from reca.models import text_tokenizer as tt
from reca.models.published import PUBLISHED_JANUS
from reca.objectives.templates import CAPTION_INSTRUCTIONS, RECONSTRUCTION_TEMPLATES
from reca.vocabulary import GENEVAL_COLOURS, SHAPES

#: a chat template in the layout of a published Janus processor: the user's content is a list of parts
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}<|User|>: {% else %}<|Assistant|>: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image_placeholder>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}\n\n{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)
GENEVAL_WORDS = ("a photo of an the and left right above below of to one two three four five six seven eight "
                 "nine ten")


def texts(captions: Path | None) -> list[str]:
    """Every text the pipeline reads: templates, instructions, GenEval's words, and the captions if given."""
    out = [*RECONSTRUCTION_TEMPLATES, *CAPTION_INSTRUCTIONS, GENEVAL_WORDS, " ".join(GENEVAL_COLOURS),
           " ".join(SHAPES), " ".join(f"{s}s" for s in SHAPES)]
    if captions is not None and captions.exists():
        out += [json.loads(line)["caption"] for line in captions.read_text().splitlines() if line.strip()]
    return out


def published_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word tokenizer that names its image tokens as a published Janus tokenizer does."""
    word = tt.build_word_tokenizer(words)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word.backend_tokenizer, bos_token=tt.BOS, eos_token=tt.EOS, pad_token=tt.PAD,
        unk_token=tt.UNK, extra_special_tokens={"image_token": tt.IMAGE_PLACEHOLDER, "boi_token": tt.BOI,
                                                "eoi_token": tt.EOI})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(PUBLISHED_JANUS), default="janus-pro-1b")
    parser.add_argument("--out", type=Path, required=True, help="Directory to write (replaced if it exists).")
    parser.add_argument("--layers", type=int, default=None,
                        help="Decoder and vision layers (default: the published depth).")
    parser.add_argument("--vocab", type=int, default=None, help="Text vocabulary (default: the published 102,400).")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="Dtype on disk (published: bfloat16).")
    parser.add_argument("--captions", type=Path, default=Path("data/raw/captioned/captions.jsonl"),
                        help="A captions.jsonl whose words the tokenizer must know (skipped if absent).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = published_tokenizer(texts(args.captions))
    config = PUBLISHED_JANUS[args.model].config(tokenizer, layers=args.layers, vocab=args.vocab)
    torch.manual_seed(args.seed)
    model = JanusForConditionalGeneration(config).to(getattr(torch, args.dtype))
    model.save_pretrained(args.out, safe_serialization=True)
    processor = JanusProcessor(image_processor=JanusImageProcessorPil(), tokenizer=tokenizer,
                               chat_template=CHAT_TEMPLATE,
                               num_image_tokens=config.vision_config.num_image_tokens)
    processor.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": str(args.out), "model": args.model, "parameters": params, "dtype": args.dtype,
                      "files": sorted(p.name for p in args.out.iterdir())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
