"""The golden random-weight checkpoints (sd15-mini, lora-mini; sd15 for GPU benchmarks), generated
from their manifests.

Every tensor is a pure function of its key and shape (../shared/golden/RECIPE.md, "Values"):
a PCG64 normal stream seeded with the CRC32 of the key, scaled by kind (bias, norm weight, or
fan-in), rounded to float16. The manifests in tests/data give each tensor's dtype, shape and
sha256; generation checks every tensor hash and the content hash of the whole file.

Generated files are cached in `.cache/golden/` (git-ignored) across test sessions: a stamp
next to the file records its size, mtime and verified content hash, so the ~8 s generation
happens once per checkout. A file lock keeps concurrent test sessions from writing it twice.

    python -m tests.models.golden_checkpoint sd15-mini [DEST]
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CACHE = REPO / ".cache" / "golden"

# RECIPE.md, "Hashes" table: the content hash of each variant.
CONTENT_SHA256 = {
    "sd15-mini": "277474ae405f8311a64003bdd0fa439961db0791787589ef4bbef1a110f01f7e",
    "lora-mini": "7d48b91d37511b44b5b0a4f41447802e7bfd3386a4d065f92ac6d64e60159267",
    # Full-size SD1.5 (~2.1 GB, ~30 s CPU to generate): for bench/sd_txt2img.py, not the tests.
    "sd15": "cfe21bf1d136f4b86fe107f86db7d4d00a9503e4b0ce338fabe10d84283e03ea",
}
FILE_NAMES = {"sd15-mini": "sd15-mini.safetensors", "lora-mini": "lora-mini.safetensors",
              "sd15": "sd15.safetensors"}


class GoldenMismatch(AssertionError):
    """A generated tensor or file does not hash to what the manifest says."""


def manifest(variant: str) -> dict:
    return json.loads((DATA / f"manifest_{variant}.json").read_text())


def tensor_value(key: str, shape: list[int]) -> np.ndarray:
    """The recipe's value for one tensor."""
    if key.endswith("embeddings.position_ids"):
        return np.arange(shape[-1], dtype=np.int64).reshape(shape)
    if key.endswith(".alpha") and not shape:
        return np.asarray(2.0, dtype=np.float16)
    seed = zlib.crc32(key.encode("utf-8")) & 0xFFFFFFFF
    noise = np.random.Generator(np.random.PCG64(seed)).standard_normal(shape)
    if key.endswith(".bias"):
        value = 0.02 * noise
    elif len(shape) == 1:
        value = 1.0 + 0.1 * noise
    else:
        value = noise / math.sqrt(math.prod(shape[1:]))
    return value.astype(np.float16)


def _shape_text(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


def content_sha256(tensors: dict[str, np.ndarray]) -> str:
    """RECIPE.md's content hash: one `key\\tdtype\\tshape\\tsha256` line per tensor, keys sorted."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        array = tensors[key]
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        line = f"{key}\t{array.dtype.name}\t{_shape_text(list(array.shape))}\t{hashlib.sha256(raw).hexdigest()}\n"
        digest.update(line.encode("utf-8"))
    return digest.hexdigest()


def generate(variant: str) -> dict[str, np.ndarray]:
    """All tensors of `variant`, each checked against the manifest's dtype, shape and sha256."""
    spec = manifest(variant)
    tensors: dict[str, np.ndarray] = {}
    for key, entry in spec["tensors"].items():
        value = tensor_value(key, entry["shape"])
        if value.dtype.name != entry["dtype"] or list(value.shape) != entry["shape"]:
            raise GoldenMismatch(f"{variant}: {key} is {value.dtype.name} {list(value.shape)}, manifest says "
                                 f"{entry['dtype']} {entry['shape']}")
        got = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        if got != entry["sha256"]:
            raise GoldenMismatch(f"{variant}: tensor {key} hashes to {got}, manifest says {entry['sha256']}")
        tensors[key] = value
    content = content_sha256(tensors)
    if content != spec["content_sha256"] or content != CONTENT_SHA256[variant]:
        raise GoldenMismatch(f"{variant}: content sha256 {content} differs from the recipe's {CONTENT_SHA256[variant]}")
    return tensors


def write(variant: str, dest: Path) -> Path:
    """Generate `variant` and write it as safetensors to `dest` (atomically)."""
    from safetensors.numpy import save_file

    tensors = generate(variant)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + f".partial-{os.getpid()}")
    save_file(tensors, str(partial), metadata={"format": "pt"})
    os.replace(partial, dest)
    return dest


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stamp_of(path: Path, variant: str) -> dict:
    stat = path.stat()
    return {"variant": variant, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "content_sha256": CONTENT_SHA256[variant]}


def cached(variant: str, cache_dir: Path = CACHE) -> Path:
    """The generated file of `variant` in the cache, generating (and verifying) it if needed."""
    path = cache_dir / FILE_NAMES[variant]
    stamp_path = path.with_name(path.name + ".stamp.json")
    with _locked(cache_dir / f".{variant}.lock"):
        if path.is_file() and stamp_path.is_file():
            try:
                if json.loads(stamp_path.read_text()) == _stamp_of(path, variant):
                    return path
            except (OSError, ValueError):
                pass
        write(variant, path)
        stamp_path.write_text(json.dumps(_stamp_of(path, variant)))
    return path


def link_into(source: Path, folder: Path, name: str | None = None) -> Path:
    """Place `source` into `folder` (a server's model folder) by symlink, under `name`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source)
    return target


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "sd15-mini"
    out = write(which, Path(sys.argv[2])) if len(sys.argv) > 2 else cached(which)
    print(out)
