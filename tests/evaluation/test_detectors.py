"""Tests for the pluggable detectors and colour classifiers (tiny random-weight transformers models), chosen by name
in the `evaluate` stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reca.evaluation.colour_classifier import ClipColourClassifier, masked_crop
from reca.evaluation.detectors import Mask2FormerDetector
from reca.evaluation.geneval import Detection
from reca.evaluation.geneval_prompts import GENEVAL_COLOURS
from reca.shapeworld.detector import PaletteColourClassifier, ShapeWorldDetector
from reca.shapeworld.world import PALETTE, PRESETS, Scene, SceneObject, render
from reca.stages.evaluate import build_colour_classifier, build_detector

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def tiny_mask2former(tmp_path_factory) -> Path:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig
    from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

    path = tmp_path_factory.mktemp("mask2former")
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, hidden_dim=32, mask_feature_size=32, feature_size=32,
                               encoder_feedforward_dim=32, dim_feedforward=32, decoder_layers=2, encoder_layers=1,
                               num_attention_heads=2, num_queries=6, use_pretrained_backbone=False,
                               id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)})
    Mask2FormerForUniversalSegmentation(config).save_pretrained(path)
    Mask2FormerImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from reca.models.text_tokenizer import build_word_tokenizer

    path = tmp_path_factory.mktemp("clip")
    texts = [t.format(c=c, cls=s) for c in GENEVAL_COLOURS for s in CLASSES
             for t in ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")]
    tokenizer = build_word_tokenizer(texts)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32, "eos_token_id": tokenizer.eos_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def test_mask2former_detector_loads_local_weights_and_returns_masked_detections(tiny_mask2former: Path) -> None:
    detector = build_detector("mask2former", colours=[], classes=CLASSES, path=str(tiny_mask2former))
    assert isinstance(detector, Mask2FormerDetector)
    images = [Image.new("RGB", (40, 30), (128, 128, 128)), render(Scene((SceneObject("circle", "red", 16, 16, 12),)))]
    results = detector.detect(images)
    assert len(results) == 2
    for image, found in zip(images, results, strict=True):
        assert found, "threshold 0: every non-empty query mask is returned for the scorer to filter"
        for det in found:
            assert det.label in CLASSES and 0.0 <= det.score <= 1.0
            assert det.mask.shape == (image.height, image.width) and det.mask.any()
            x0, y0, x1, y1 = det.box
            ys, xs = np.nonzero(det.mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_mask2former_needs_a_path() -> None:
    with pytest.raises(ValueError, match="detector_path"):
        build_detector("mask2former", colours=[], classes=CLASSES)


def test_clip_colour_classifier_loads_local_weights_and_names_geneval_colours(tiny_clip: Path) -> None:
    classifier = build_colour_classifier("clip", colours=[], path=str(tiny_clip))
    assert isinstance(classifier, ClipColourClassifier)
    image = render(Scene((SceneObject("circle", "red", 10, 10, 12), SceneObject("square", "blue", 24, 24, 12))))
    dets = ShapeWorldDetector(["red", "blue"], CLASSES).detect([image])[0]
    colours = classifier.classify(image, dets, "circle")
    assert len(colours) == 2 and set(colours) <= set(GENEVAL_COLOURS)
    assert classifier.classify(image, [], "circle") == []
    # One zero-shot head per class name, built once.
    assert list(classifier._text_weights) == ["circle"]
    assert tuple(classifier._text_weights["circle"].shape) == (8, len(GENEVAL_COLOURS))


def test_masked_crop_pastes_the_object_on_genevals_grey() -> None:
    image = Image.new("RGB", (20, 20), (0, 200, 0))
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:10, 5:8] = True
    mask[5, 5] = False
    crop = masked_crop(image, Detection("x", 1.0, (5, 5, 8, 10), mask))
    pixels = np.asarray(crop)
    assert crop.size == (3, 5)
    assert tuple(pixels[0, 0]) == (0x99, 0x99, 0x99) and tuple(pixels[1, 1]) == (0, 200, 0)
    with pytest.raises(ValueError, match="mask shape"):
        masked_crop(image, Detection("x", 1.0, (0, 0, 2, 2), np.ones((3, 3), dtype=bool)))


def test_palette_classifier_votes_over_the_masked_pixels() -> None:
    scene = Scene((SceneObject("square", "orange", 10, 10, 12), SceneObject("cross", "purple", 24, 24, 12)))
    image = render(scene)
    dets = ShapeWorldDetector(PRESETS["geneval"].colours).detect([image])[0]
    assert sorted(PaletteColourClassifier(PRESETS["geneval"].colours).classify(image, dets, "any")) == [
        "orange", "purple"]
    # A box without a mask: the background is grey, nearest to no object colour but still outvoted.
    noisy = np.asarray(image).copy()
    noisy[4:16, 4:16] = np.clip(noisy[4:16, 4:16] + np.random.default_rng(0).normal(0, 10, (12, 12, 3)), 0, 255)
    boxed = Detection("square", 1.0, (4.0, 4.0, 16.0, 16.0))
    assert PaletteColourClassifier(list(PALETTE)).classify(Image.fromarray(noisy), [boxed], "square") == ["orange"]


def test_shapeworld_detector_refuses_unknown_vocabulary() -> None:
    with pytest.raises(ValueError, match="does not know"):
        ShapeWorldDetector(["red", "teal"])
    with pytest.raises(ValueError, match="unknown detector"):
        build_detector("yolo", colours=["red"], classes=CLASSES)
