"""Raw image collections for the data-stage tests: noise, smooth scenes, files, tar shards, tree snapshots."""

from __future__ import annotations

from pathlib import Path


def noise_image(width: int, height: int, seed: int = 0, mode: str = "RGB"):
    """A PIL image of uniform noise: every seed gives a clearly different picture."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB").convert(mode)

def scene_image(size: int = 64, seed: int = 0):
    """A smooth picture (a few soft coloured blobs): perceptual hashes survive resizing and JPEG."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for _ in range(12):
        cx, cy, r = rng.random(3) * [1, 1, 0.15] + [0, 0, 0.05]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
        img += blob[..., None] * rng.random(3)
    return Image.fromarray((img / img.max() * 255).astype(np.uint8), mode="RGB")

def save_image(root, rel: str, image, **kwargs):
    """Save ``image`` at ``root/rel`` (parents created); returns the path."""
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path

def image_bytes(image, fmt: str = "PNG", **kwargs) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()

def write_tar(path, members: dict[str, bytes]):
    """A webdataset-style .tar shard with ``members`` (name -> bytes), in the given order."""
    import io
    import tarfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path

def snapshot_tree(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove a stage modified nothing)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
