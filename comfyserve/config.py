"""Settings: everything the command line decides, as one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MAX_UPLOAD_MB = 100.0


@dataclass
class Settings:
    """Server settings; defaults are ComfyUI's."""

    base_directory: Path = field(default_factory=Path.cwd)
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 8188
    output_directory: Path | None = None
    input_directory: Path | None = None
    temp_directory: Path | None = None
    user_directory: Path | None = None
    extra_model_paths_config: list[Path] = field(default_factory=list)
    tls_keyfile: Path | None = None
    tls_certfile: Path | None = None
    # None: CORS off and the origin check on; a string: the allowed origin ("*" for all).
    enable_cors_header: str | None = None
    # Extra Host names accepted besides this server's own (reverse proxies).
    allowed_hosts: list[str] = field(default_factory=list)
    max_upload_size_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_queue_size: int = 10000
    max_history: int = 10000
    front_end_root: Path | None = None
    disable_all_custom_nodes: bool = False
    whitelist_custom_nodes: list[str] = field(default_factory=list)
    multi_user: bool = False
    disable_metadata: bool = False
    dont_print_server: bool = False
    verbose: str = "INFO"
    cpu: bool = False
    cache_mode: str = "classic"  # classic | lru | none | ram
    cache_lru: int = 0
    preview_method: str = "none"
    preview_size: int = 512
    enable_compress_response_body: bool = False
    argv: list[str] = field(default_factory=list)

    @property
    def max_upload_size(self) -> int:
        """The upload limit in bytes."""
        return round(self.max_upload_size_mb * 1024 * 1024)

    def resolved(self, name: str, default_leaf: str) -> Path:
        """A folder given on the command line, else `default_leaf` under the base directory."""
        value = getattr(self, name)
        return Path(value).resolve() if value else (Path(self.base_directory) / default_leaf).resolve()
