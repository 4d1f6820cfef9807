"""Where files live: input/output/temp/user folders, model folders, and the one safe join.

Every path that comes from a client goes through `safe_join`, which resolves symlinks
before checking containment, so nothing outside a folder is ever read or written.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from comfyserve.config import Settings

# File extensions ComfyUI lists as model files.
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# (folder name, sub-folders under models/, also under output/?, extensions). Order is ComfyUI's,
# which `/models` and `/internal/folder_paths` show.
_MODEL_FOLDERS: list[tuple[str, tuple[str, ...], str | None, frozenset[str]]] = [
    ("checkpoints", ("checkpoints",), "checkpoints", MODEL_EXTENSIONS),
    ("configs", ("configs",), None, frozenset({".yaml"})),
    ("loras", ("loras",), "loras", MODEL_EXTENSIONS),
    ("vae", ("vae",), "vae", MODEL_EXTENSIONS),
    ("text_encoders", ("text_encoders", "clip"), "clip", MODEL_EXTENSIONS),
    ("diffusion_models", ("unet", "diffusion_models"), "diffusion_models", MODEL_EXTENSIONS),
    ("clip_vision", ("clip_vision",), None, MODEL_EXTENSIONS),
    ("style_models", ("style_models",), None, MODEL_EXTENSIONS),
    ("embeddings", ("embeddings",), None, MODEL_EXTENSIONS),
    ("diffusers", ("diffusers",), None, frozenset({"folder"})),
    ("vae_approx", ("vae_approx",), None, MODEL_EXTENSIONS),
    ("controlnet", ("controlnet", "t2i_adapter"), None, MODEL_EXTENSIONS),
    ("gligen", ("gligen",), None, MODEL_EXTENSIONS),
    ("upscale_models", ("upscale_models",), None, MODEL_EXTENSIONS),
    ("latent_upscale_models", ("latent_upscale_models",), None, MODEL_EXTENSIONS),
    ("custom_nodes", (), None, frozenset()),
    ("hypernetworks", ("hypernetworks",), None, MODEL_EXTENSIONS),
    ("photomaker", ("photomaker",), None, MODEL_EXTENSIONS),
    ("classifiers", ("classifiers",), None, frozenset({""})),
    ("model_patches", ("model_patches",), None, MODEL_EXTENSIONS),
    ("audio_encoders", ("audio_encoders",), None, MODEL_EXTENSIONS),
]

# Old names that ComfyUI still accepts for a folder.
LEGACY_FOLDER_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}

# Folders `/models` and `/experiment/models` leave out.
HIDDEN_MODEL_FOLDERS = frozenset({"configs", "custom_nodes"})


class PathEscape(ValueError):
    """A client-supplied path points outside the folder it must stay in."""


def _check_parts(parts: tuple[str, ...]) -> None:
    for part in parts:
        if "\x00" in part:
            raise PathEscape("path contains a NUL byte")
        if "\\" in part:
            raise PathEscape("path contains a backslash")
        if part.startswith("/") or os.path.isabs(part):
            raise PathEscape("absolute paths are not allowed")


def safe_join(base: Path | str, *parts: str) -> Path:
    """Join client-supplied `parts` onto `base`; raise PathEscape unless the result stays inside.

    Rejects NUL bytes, absolute parts, backslashes used as separators, and any result that
    leaves `base` once symlinks are resolved.
    """
    root = Path(base).resolve()
    _check_parts(parts)
    joined = root.joinpath(*parts) if parts else root
    resolved = joined.resolve()
    if resolved != root and root not in resolved.parents:
        raise PathEscape("path leaves its folder")
    return resolved


def model_join(base: Path | str, *parts: str) -> Path:
    """Join a client-chosen model name onto a model folder: the name itself may not leave the
    folder (`..`, absolute, NUL, backslash), but symlinks inside it may point anywhere.

    Model folders are the administrator's: people link checkpoints in from other disks, and
    ComfyUI lists and loads them. Clients cannot create files there, so a link in a model
    folder is trusted; everything clients can write to goes through `safe_join` instead.
    """
    _check_parts(parts)
    root = Path(os.path.abspath(base))
    joined = Path(os.path.normpath(root.joinpath(*parts)))
    if joined != root and root not in joined.parents:
        raise PathEscape("path leaves its folder")
    return joined


def is_within(path: Path, base: Path) -> bool:
    """True when `path` (symlinks resolved) is `base` or lies under it."""
    root = base.resolve()
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


@dataclass
class ModelFolder:
    """One named model folder: the directories searched, in order, and the file extensions."""

    name: str
    paths: list[Path]
    extensions: frozenset[str]


@dataclass
class Folders:
    """The server's folders, resolved once from the settings."""

    base: Path
    input: Path
    output: Path
    temp: Path
    user: Path
    models_dir: Path
    custom_nodes: Path
    model_folders: dict[str, ModelFolder] = field(default_factory=dict)
    _list_cache: dict[str, tuple[float, list[str]]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Folders:
        base = Path(settings.base_directory).resolve()
        output = settings.resolved("output_directory", "output")
        models_dir = base / "models"
        folders = cls(
            base=base,
            input=settings.resolved("input_directory", "input"),
            output=output,
            temp=settings.resolved("temp_directory", "temp"),
            user=settings.resolved("user_directory", "user"),
            models_dir=models_dir,
            custom_nodes=base / "custom_nodes",
        )
        for name, subdirs, output_subdir, exts in _MODEL_FOLDERS:
            paths = [models_dir / s for s in subdirs]
            if name == "custom_nodes":
                paths = [folders.custom_nodes]
            if output_subdir:
                paths.append(output / output_subdir)
            folders.model_folders[name] = ModelFolder(name, paths, exts)
        for config in settings.extra_model_paths_config:
            from comfyserve.extra_model_paths import load_extra_model_paths

            for name, path, first in load_extra_model_paths(Path(config)):
                folders.add_model_path(name, path, first=first)
        return folders

    def add_model_path(self, name: str, path: Path, first: bool = False) -> None:
        """Register one more directory for a model folder (extra_model_paths.yaml, custom nodes)."""
        name = LEGACY_FOLDER_NAMES.get(name, name)
        folder = self.model_folders.get(name)
        if folder is None:
            folder = self.model_folders[name] = ModelFolder(name, [], MODEL_EXTENSIONS)
        if path not in folder.paths:
            folder.paths.insert(0, path) if first else folder.paths.append(path)
        self.forget_listing(name)

    def forget_listing(self, name: str) -> None:
        """Drop the cached file list of model folder `name` (its paths or extensions changed)."""
        self._list_cache.pop(LEGACY_FOLDER_NAMES.get(name, name), None)

    def ensure(self) -> None:
        """Create the folders a fresh base directory needs."""
        for path in (self.input, self.output, self.temp, self.user, self.custom_nodes):
            path.mkdir(parents=True, exist_ok=True)
        for folder in self.model_folders.values():
            if folder.paths and folder.paths[0].is_relative_to(self.models_dir):
                folder.paths[0].mkdir(parents=True, exist_ok=True)

    def directory_by_type(self, kind: str) -> Path | None:
        """input / output / temp → its folder; anything else → None."""
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind)

    def model_folder(self, name: str) -> ModelFolder | None:
        return self.model_folders.get(LEGACY_FOLDER_NAMES.get(name, name))

    def filename_list(self, name: str) -> list[str]:
        """Sorted relative file names (forward slashes) in a model folder, as ComfyUI lists them."""
        folder = self.model_folder(name)
        if folder is None:
            return []
        stamp = self._stamp(folder)
        cached = self._list_cache.get(folder.name)
        if cached and cached[0] == stamp:
            return list(cached[1])
        names: set[str] = set()
        for root in folder.paths:
            names.update(_walk_files(root, folder.extensions))
        result = sorted(names)
        self._list_cache[folder.name] = (stamp, result)
        return list(result)

    def full_path(self, name: str, filename: str) -> Path | None:
        """The file `filename` of model folder `name`, or None; never outside the folder."""
        folder = self.model_folder(name)
        if folder is None:
            return None
        for root in folder.paths:
            try:
                candidate = model_join(root, filename)
            except PathEscape:
                return None
            if candidate.is_file():
                return candidate
        return None

    @staticmethod
    def _stamp(folder: ModelFolder) -> float:
        # Newest mtime among the folder's roots; a changed directory invalidates the listing.
        stamp = 0.0
        for root in folder.paths:
            try:
                stamp = max(stamp, root.stat().st_mtime)
            except OSError:
                continue
        return stamp if stamp else time.monotonic()


def _walk_files(root: Path, extensions: frozenset[str]) -> list[str]:
    if not root.is_dir():
        return []
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root)
        for filename in filenames:
            if filename.startswith("."):
                continue
            if "folder" in extensions:
                continue
            if extensions and "" not in extensions and os.path.splitext(filename)[1].lower() not in extensions:
                continue
            rel = filename if rel_dir == "." else f"{rel_dir}/{filename}"
            found.append(rel.replace(os.sep, "/"))
        if "folder" in extensions and rel_dir == ".":
            found.extend(d for d in dirnames)
            dirnames[:] = []
    return found
