"""The `comfyserve` command: ComfyUI's flags, with ComfyUI's names and meanings, → `Settings`.

Every flag of ComfyUI 0.8's `main.py` parses, so a launcher script written for ComfyUI starts
comfyserve unchanged. Flags whose effect comfyserve does not have yet are accepted and named in
one warning each at start-up; nothing is silently ignored.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from comfyserve.config import DEFAULT_MAX_UPLOAD_MB, Settings

log = logging.getLogger("comfyserve")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PREVIEW_METHODS = ("none", "auto", "latent2rgb", "taesd")
HASH_FUNCTIONS = ("md5", "sha1", "sha256", "sha512")

# Destinations (argparse names) whose flags comfyserve honours. Every other ComfyUI flag is
# accepted with a warning when given.
IMPLEMENTED = frozenset({
    "listen", "port", "tls_keyfile", "tls_certfile", "enable_cors_header", "max_upload_size",
    "base_directory", "extra_model_paths_config", "output_directory", "temp_directory",
    "input_directory", "user_directory", "cpu", "cache_classic", "cache_lru", "cache_none",
    "cache_ram", "disable_metadata", "disable_all_custom_nodes", "whitelist_custom_nodes",
    "multi_user", "verbose", "log_stdout", "dont_print_server", "front_end_root",
    "enable_compress_response_body", "disable_auto_launch", "quick_test_for_ci",
    "preview_method", "preview_size",
    # devices, memory and precision (comfyserve/models/devices.py, memory.py)
    "gpu_only", "highvram", "normalvram", "lowvram", "novram", "force_fp16", "force_fp32",
    "fp32_unet", "fp64_unet", "bf16_unet", "fp16_unet", "fp16_vae", "bf16_vae", "fp32_vae", "cpu_vae",
    "fp16_text_enc", "bf16_text_enc", "fp32_text_enc", "reserve_vram", "disable_smart_memory",
    # comfyserve's own
    "max_queue_size", "max_history", "allowed_hosts",
})


def _flag(parser: argparse.ArgumentParser, *names: str, **kwargs) -> None:
    parser.add_argument(*names, **kwargs)


def _exclusive(parser: argparse.ArgumentParser, *flags: str) -> None:
    group = parser.add_mutually_exclusive_group()
    for name in flags:
        group.add_argument(name, action="store_true")


def build_parser() -> argparse.ArgumentParser:
    """ComfyUI 0.8's argument parser, flag for flag, plus comfyserve's own few."""
    p = argparse.ArgumentParser(prog="comfyserve", description="A drop-in replacement for the ComfyUI server.")
    _flag(p, "--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::",
          help="IP address(es) to listen on, comma-separated (default: 127.0.0.1); "
               "bare --listen means 0.0.0.0,:: (every IPv4 and IPv6 address).")
    _flag(p, "--port", type=int, default=8188, help="Set the listen port.")
    _flag(p, "--tls-keyfile", type=str, help="TLS key file; with --tls-certfile serves https.")
    _flag(p, "--tls-certfile", type=str, help="TLS certificate file; with --tls-keyfile serves https.")
    _flag(p, "--enable-cors-header", type=str, default=None, metavar="ORIGIN", nargs="?", const="*",
          help="Enable CORS with this origin ('*' when bare); also turns the Origin check off.")
    _flag(p, "--max-upload-size", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="Maximum upload size in MB.")
    _flag(p, "--base-directory", type=str, default=None,
          help="Base directory for models, custom_nodes, input, output, temp and user.")
    _flag(p, "--extra-model-paths-config", type=str, default=None, metavar="PATH", nargs="+",
          action="append", help="Load one or more extra_model_paths.yaml files.")
    _flag(p, "--output-directory", type=str, default=None, help="Output directory; overrides --base-directory.")
    _flag(p, "--temp-directory", type=str, default=None, help="Temp directory; overrides --base-directory.")
    _flag(p, "--input-directory", type=str, default=None, help="Input directory; overrides --base-directory.")
    _flag(p, "--auto-launch", action="store_true", help="Open the UI in a browser (not supported).")
    _flag(p, "--disable-auto-launch", action="store_true", help="Do not open a browser (the default).")
    _flag(p, "--cuda-device", type=int, default=None, metavar="DEVICE_ID")
    _flag(p, "--default-device", type=int, default=None, metavar="DEFAULT_DEVICE_ID")
    _exclusive(p, "--cuda-malloc", "--disable-cuda-malloc")
    _exclusive(p, "--force-fp32", "--force-fp16")
    _exclusive(p, "--fp32-unet", "--fp64-unet", "--bf16-unet", "--fp16-unet", "--fp8_e4m3fn-unet",
               "--fp8_e5m2-unet", "--fp8_e8m0fnu-unet")
    _exclusive(p, "--fp16-vae", "--fp32-vae", "--bf16-vae")
    _flag(p, "--cpu-vae", action="store_true")
    _exclusive(p, "--fp8_e4m3fn-text-enc", "--fp8_e5m2-text-enc", "--fp16-text-enc", "--fp32-text-enc",
               "--bf16-text-enc")
    _flag(p, "--force-channels-last", action="store_true")
    _flag(p, "--directml", type=int, nargs="?", metavar="DIRECTML_DEVICE", const=-1)
    _flag(p, "--oneapi-device-selector", type=str, default=None, metavar="SELECTOR_STRING")
    _flag(p, "--disable-ipex-optimize", action="store_true")
    _flag(p, "--supports-fp8-compute", action="store_true")
    _flag(p, "--preview-method", type=str, default="none", choices=PREVIEW_METHODS,
          metavar="[none,auto,latent2rgb,taesd]", help="Default preview method for sampler nodes.")
    _flag(p, "--preview-size", type=int, default=512, help="Maximum preview size for sampler nodes.")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true", help="Keep every node output (default).")
    cache.add_argument("--cache-lru", type=int, default=0, help="Keep at most N node results (LRU).")
    cache.add_argument("--cache-none", action="store_true", help="Run every node on every prompt.")
    cache.add_argument("--cache-ram", nargs="?", const=4.0, type=float, default=0,
                       help="RAM-pressure caching with this headroom in GB (default 4).")
    _exclusive(p, "--use-split-cross-attention", "--use-quad-cross-attention",
               "--use-pytorch-cross-attention", "--use-sage-attention", "--use-flash-attention")
    _flag(p, "--disable-xformers", action="store_true")
    _exclusive(p, "--force-upcast-attention", "--dont-upcast-attention")
    _flag(p, "--enable-manager", action="store_true")
    _exclusive(p, "--disable-manager-ui", "--enable-manager-legacy-ui")
    _exclusive(p, "--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu")
    _flag(p, "--reserve-vram", type=float, default=None)
    _flag(p, "--async-offload", nargs="?", const=2, type=int, default=None, metavar="NUM_STREAMS")
    _flag(p, "--disable-async-offload", action="store_true")
    _flag(p, "--force-non-blocking", action="store_true")
    _flag(p, "--default-hashing-function", type=str, choices=HASH_FUNCTIONS, default="sha256")
    _flag(p, "--disable-smart-memory", action="store_true")
    _flag(p, "--deterministic", action="store_true")
    _flag(p, "--fast", nargs="*", type=str, default=None)
    _flag(p, "--disable-pinned-memory", action="store_true")
    _flag(p, "--mmap-torch-files", action="store_true")
    _flag(p, "--disable-mmap", action="store_true")
    _flag(p, "--dont-print-server", action="store_true", help="Don't print server output.")
    _flag(p, "--quick-test-for-ci", action="store_true", help="Exit once start-up has succeeded.")
    _flag(p, "--windows-standalone-build", action="store_true")
    _flag(p, "--disable-metadata", action="store_true", help="Do not save prompt metadata in files.")
    _flag(p, "--disable-all-custom-nodes", action="store_true", help="Load no custom node packs.")
    _flag(p, "--whitelist-custom-nodes", type=str, nargs="+", default=[],
          help="Custom node folders to load even with --disable-all-custom-nodes.")
    _flag(p, "--disable-api-nodes", action="store_true")
    _flag(p, "--multi-user", action="store_true", help="Per-user storage, chosen by the Comfy-User header.")
    _flag(p, "--verbose", type=str, default="INFO", const="DEBUG", nargs="?", choices=LOG_LEVELS,
          help="Set the logging level.")
    _flag(p, "--log-stdout", action="store_true", help="Log to stdout instead of stderr.")
    _flag(p, "--front-end-version", type=str, default="comfyanonymous/ComfyUI@latest")
    _flag(p, "--front-end-root", type=str, default=None, help="Folder of the web UI to serve.")
    _flag(p, "--user-directory", type=str, default=None, help="User directory; overrides --base-directory.")
    _flag(p, "--enable-compress-response-body", action="store_true", help="Compress response bodies.")
    _flag(p, "--comfy-api-base", type=str, default="https://api.comfy.org")
    _flag(p, "--database-url", type=str, default=None)
    # comfyserve's own.
    _flag(p, "--max-queue-size", type=int, default=10000,
          help="Refuse new prompts (429 on /api/v1/prompts) while this many are waiting.")
    _flag(p, "--max-history", type=int, default=10000, help="History entries kept (ComfyUI keeps 10000).")
    _flag(p, "--allowed-hosts", type=str, nargs="+", default=[], metavar="NAME",
          help="Extra Host header names a loopback-bound server accepts (reverse proxies).")
    return p


def unimplemented_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The option strings of flags that were given but have no effect in comfyserve yet."""
    given = []
    for action in parser._actions:
        if action.dest in IMPLEMENTED or action.dest == "help" or not action.option_strings:
            continue
        if getattr(args, action.dest) != action.default:
            given.append(action.option_strings[0])
    return given


def _cache_mode(args: argparse.Namespace) -> str:
    if args.cache_none:
        return "none"
    if args.cache_lru > 0:
        return "lru"
    if args.cache_ram:
        return "ram"
    return "classic"


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The typed settings the parsed flags describe."""
    base = Path(args.base_directory).resolve() if args.base_directory else Path.cwd()
    configs = [Path(p) for group in (args.extra_model_paths_config or []) for p in group]
    return Settings(
        base_directory=base,
        listen=[h.strip() for h in args.listen.split(",") if h.strip()],
        port=args.port,
        output_directory=Path(args.output_directory) if args.output_directory else None,
        input_directory=Path(args.input_directory) if args.input_directory else None,
        temp_directory=Path(args.temp_directory) if args.temp_directory else None,
        user_directory=Path(args.user_directory) if args.user_directory else None,
        extra_model_paths_config=configs,
        tls_keyfile=Path(args.tls_keyfile) if args.tls_keyfile else None,
        tls_certfile=Path(args.tls_certfile) if args.tls_certfile else None,
        enable_cors_header=args.enable_cors_header,
        allowed_hosts=list(args.allowed_hosts),
        max_upload_size_mb=args.max_upload_size,
        max_queue_size=args.max_queue_size,
        max_history=args.max_history,
        front_end_root=Path(args.front_end_root) if args.front_end_root else None,
        disable_all_custom_nodes=args.disable_all_custom_nodes,
        whitelist_custom_nodes=list(args.whitelist_custom_nodes),
        multi_user=args.multi_user,
        disable_metadata=args.disable_metadata,
        dont_print_server=args.dont_print_server,
        verbose=args.verbose,
        cpu=args.cpu,
        cache_mode=_cache_mode(args),
        cache_lru=args.cache_lru,
        preview_method=args.preview_method,
        preview_size=args.preview_size,
        enable_compress_response_body=args.enable_compress_response_body,
    )


def configure_logging(level: str, to_stdout: bool) -> None:
    """Plain `message` lines on stderr (or stdout), as ComfyUI prints them."""
    handler = logging.StreamHandler(sys.stdout if to_stdout else sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log is noise at INFO; keep its errors.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ComfyUI's flags and serve until interrupted."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    configure_logging(args.verbose, args.log_stdout)
    for flag in unimplemented_flags(args, parser):
        log.warning("comfyserve: %s is accepted for ComfyUI compatibility but has no effect yet", flag)
    settings = settings_from_args(args)
    settings.argv = ["main.py", *raw]
    if (settings.tls_keyfile is None) != (settings.tls_certfile is None):
        parser.error("--tls-keyfile and --tls-certfile must be given together")
    from comfyserve.extra_model_paths import ExtraModelPathsError
    from comfyserve.server.app import serve
    from comfyserve.store import StoreBusy

    try:
        serve(settings, exit_after_start=args.quick_test_for_ci)
    except ExtraModelPathsError as exc:
        parser.error(str(exc))
    except StoreBusy as exc:
        parser.exit(1, f"comfyserve: error: {exc}\n")


if __name__ == "__main__":
    main()
