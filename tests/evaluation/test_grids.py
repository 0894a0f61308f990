"""Sample grids: every column headed by its whole prompt, wrapped to the column."""

from __future__ import annotations

from PIL import Image

from reca.evaluation.grids import CHAR_WIDTH, LINE_HEIGHT, image_grid, wrap


def test_wrap_keeps_every_word_within_the_width():
    lines = wrap("a photo of a purple circle and a yellow square", 16)
    assert lines == ["a photo of a", "purple circle", "and a yellow", "square"]
    assert " ".join(lines) == "a photo of a purple circle and a yellow square"
    assert wrap("supercalifragilistic", 5) == ["super"]
    assert wrap("", 5) == [""]


def test_a_header_of_long_prompts_gets_the_rows_it_needs_and_is_drawn_above_each_column():
    tile = Image.new("RGB", (32, 32), (0, 0, 255))
    rows = [("sft", [tile, tile]), ("reca", [tile, tile])]
    plain = image_grid(rows, label_width=60)
    prompts = ["a photo of a purple circle and a yellow square", "a photo of a red cross"]
    headed = image_grid(rows, label_width=60, header=prompts)
    lines = len(wrap(prompts[0], 96 // CHAR_WIDTH))
    assert headed.size == (plain.size[0], plain.size[1] + LINE_HEIGHT * lines + 4)
    # text was drawn above each column (dark pixels in the header band)
    band = headed.crop((60, 0, headed.size[0], LINE_HEIGHT * lines)).convert("L")
    left, right = band.crop((0, 0, 100, band.size[1])), band.crop((100, 0, band.size[0], band.size[1]))
    assert min(left.getdata()) < 128 and min(right.getdata()) < 128
