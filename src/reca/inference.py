"""Text-to-image and image editing with a trained model: what `reca generate` and `reca edit` run.

RecA changes nothing at inference (DESIGN.md §1.5): text-to-image conditions
on the prompt alone, editing on the source image's understanding embeddings
``h_v`` plus the instruction. A model is a directory a stage wrote
(``models/reca``, ``models/sft``) or an MLflow URI (``models:/<name>/<version>``,
``models:/<name>@<alias>``, ``runs:/<run id>/model``) in the pipeline's MLflow
store, downloaded to a temporary directory, loaded, and deleted.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from reca.data.images import decode_rgb
from reca.data.transforms import resize, to_pil, to_tensor
from reca.distributed import process_device
from reca.fileio import atomic_path
from reca.models import registry
from reca.models.base import UMMAdapter

MLFLOW_URI_PREFIXES = ("models:/", "runs:/")


def _find_model_dir(root: Path) -> Path:
    """The directory under ``root`` (itself or one level down) that holds a saved adapter."""
    for candidate in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if (candidate / registry.ADAPTER_FILE).exists():
            return candidate
    raise FileNotFoundError(f"no {registry.ADAPTER_FILE} in the downloaded artifacts {root}: "
                            "not a model saved by a reca stage")


def download_mlflow_model(model_uri: str, dst: str | Path, tracking_uri: str) -> Path:
    """Download ``models:/NAME/VERSION``, ``models:/NAME@ALIAS`` or ``runs:/RUN_ID/PATH`` from one store.

    Resolved with a client bound to ``tracking_uri`` (registry included): MLflow's
    own ``models:/`` resolution reads the process-wide registry URI instead.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    kind, _, rest = model_uri.partition(":/")
    if kind == "runs":
        run_id, _, path = rest.strip("/").partition("/")
        return Path(client.download_artifacts(run_id, path, str(dst)))
    name, at, alias = rest.strip("/").partition("@")
    if at:
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, _, number = name.partition("/")
        if not number.isdigit():
            raise ValueError(f"{model_uri}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
        version = client.get_model_version(name, number)
    source = client.get_model_version_download_uri(version.name, version.version)
    if source.startswith("models:/"):  # an MLflow 3 logged model
        source = client.get_logged_model(source.removeprefix("models:/").strip("/")).artifact_location
    if source.startswith("runs:/"):
        return download_mlflow_model(source, dst, tracking_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                    tracking_uri=tracking_uri))


@contextlib.contextmanager
def model_directory(model: str | Path) -> Iterator[Path]:
    """A local directory holding ``model``: the path itself, or an MLflow URI's downloaded artifacts.

    MLflow URIs are looked up in the pipeline's store (``MLFLOW_TRACKING_URI`` or
    this repository's ``mlflow.db``), not MLflow's default ``./mlruns``.

    Raises:
        FileNotFoundError: a local path that is not a directory.
    """
    text = str(model)
    if text.startswith(MLFLOW_URI_PREFIXES):
        from reca.tracking.mlflow_run import tracking_uri

        with tempfile.TemporaryDirectory(prefix="reca-model-") as tmp:
            yield _find_model_dir(download_mlflow_model(text, tmp, tracking_uri(Path.cwd())))
        return
    path = Path(model)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: model directory not found; train one (`dvc repro train` writes "
                                "models/reca) or pass --model DIR or --model models:/NAME/VERSION")
    yield path


def default_device() -> torch.device:
    """The process's accelerator (``cuda:<LOCAL_RANK>``, the first GPU outside a launcher), else the CPU."""
    return process_device()


def load_model(model: str | Path, *, device: torch.device | str | None = None,
               trust_remote_code: bool = False) -> UMMAdapter:
    """Load a saved model (directory or MLflow URI) with the adapter that saved it, in eval mode."""
    with model_directory(model) as directory:
        adapter = registry.load(directory, trust_remote_code=trust_remote_code)
    return adapter.eval().to(device or default_device())


def unknown_words(adapter: UMMAdapter, text: str) -> list[str]:
    """Words of ``text`` the model's tokenizer maps to its unknown token (they carry no meaning to it).

    A model trained from scratch on the default world knows only the words of
    its captions and templates; anything else is read as ``<unk>``.
    """
    tokenizer = getattr(adapter, "tokenizer", None)
    unk = getattr(tokenizer, "unk_token_id", None)
    if tokenizer is None or unk is None or not getattr(tokenizer, "is_fast", False):
        return []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [text[a:b] for tok, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)
            if tok == unk]


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def generate_images(adapter: UMMAdapter, prompt: str, *, n: int = 1, seed: int = 0, guidance_scale: float = 1.0,
                    temperature: float = 1.0) -> list[Image.Image]:
    """``n`` images for ``prompt``; the same seed gives the same images."""
    device = next(adapter.parameters()).device
    out = adapter.text_to_image([prompt] * n, guidance_scale=guidance_scale, temperature=temperature,
                                generator=_generator(seed, device))
    return [to_pil(x) for x in out]


def load_source_image(path: str | Path, size: int) -> torch.Tensor:
    """Decode an image file (any format Pillow reads, EXIF-oriented, RGB) to a (3, size, size) tensor."""
    image = decode_rgb(path).image
    return to_tensor(resize(image, size, "center_crop"))


@torch.no_grad()
def edit_images(adapter: UMMAdapter, source: torch.Tensor, instruction: str, *, n: int = 1, seed: int = 0,
                guidance_scale: float = 1.0, temperature: float = 1.0) -> list[Image.Image]:
    """``n`` edits of ``source`` (3, H, W in [-1, 1]) following ``instruction``."""
    device = next(adapter.parameters()).device
    pixels = source.unsqueeze(0).expand(n, -1, -1, -1).to(device)
    out = adapter.edit(pixels, [instruction] * n, guidance_scale=guidance_scale, temperature=temperature,
                       generator=_generator(seed, device))
    return [to_pil(x) for x in out]


def output_paths(out: str | Path, n: int) -> list[Path]:
    """``out`` for one image; ``<stem>-0<suffix>``, ``<stem>-1<suffix>``, ... for several."""
    out = Path(out)
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(n)]


def save_images(images: Sequence[Image.Image], out: str | Path, *, scale: int = 1) -> list[Path]:
    """Write ``images`` as PNG (atomically), upscaled ``scale``x with nearest neighbour for viewing."""
    paths = output_paths(out, len(images))
    for image, path in zip(images, paths, strict=True):
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    return paths
