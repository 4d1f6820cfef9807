"""The command line: ComfyUI's flags parse with ComfyUI's meanings; unknown-effect flags warn."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from comfyserve import cli
from tests.conftest import reference


@pytest.fixture(autouse=True)
def keep_root_logger():
    """cli.main configures the root logger; give it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def settings(*argv: str):
    return cli.settings_from_args(cli.build_parser().parse_args(list(argv)))


def test_defaults_are_comfyuis(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = settings()
    assert s.listen == ["127.0.0.1"] and s.port == 8188
    assert s.base_directory == tmp_path
    assert s.max_upload_size == 100 * 1024 * 1024
    assert s.cache_mode == "classic" and s.enable_cors_header is None
    assert s.preview_method == "none" and s.preview_size == 512


def test_listen_and_cors_optional_values():
    assert settings("--listen").listen == ["0.0.0.0", "::"]
    assert settings("--listen", "127.2.2.2,127.3.3.3").listen == ["127.2.2.2", "127.3.3.3"]
    assert settings("--enable-cors-header").enable_cors_header == "*"
    assert settings("--enable-cors-header", "http://a.example").enable_cors_header == "http://a.example"
    assert cli.build_parser().parse_args(["--verbose"]).verbose == "DEBUG"


def test_cache_modes():
    assert settings("--cache-none").cache_mode == "none"
    lru = settings("--cache-lru", "7")
    assert (lru.cache_mode, lru.cache_lru) == ("lru", 7)
    assert settings("--cache-ram").cache_mode == "ram"
    assert settings("--cache-classic").cache_mode == "classic"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--cache-none", "--cache-lru", "3"])


def test_folders_and_extra_configs(tmp_path):
    s = settings("--base-directory", str(tmp_path), "--output-directory", "/o", "--user-directory", "/u",
                 "--extra-model-paths-config", "a.yaml", "b.yaml", "--extra-model-paths-config", "c.yaml",
                 "--max-upload-size", "2.5", "--multi-user", "--disable-metadata")
    assert s.base_directory == tmp_path.resolve()
    assert s.output_directory == Path("/o") and s.user_directory == Path("/u")
    assert s.extra_model_paths_config == [Path("a.yaml"), Path("b.yaml"), Path("c.yaml")]
    assert s.max_upload_size == round(2.5 * 1024 * 1024)
    assert s.multi_user and s.disable_metadata


def test_every_comfyui_flag_parses():
    """Each option of ComfyUI 0.8's --help (cli_help.json) is accepted by our parser."""
    parser = cli.build_parser()
    known = {opt for action in parser._actions for opt in action.option_strings}
    for option in reference("cli_help.json")["options"]:
        for flag in option["flags"].split(", "):
            assert flag.split(" ")[0] in known, flag


def test_flags_without_effect_are_named(caplog):
    parser = cli.build_parser()
    args = parser.parse_args(["--fp8_e4m3fn-unet", "--cuda-malloc", "--port", "9000", "--fast"])
    assert cli.unimplemented_flags(args, parser) == ["--cuda-malloc", "--fp8_e4m3fn-unet", "--fast"]
    assert cli.unimplemented_flags(parser.parse_args([]), parser) == []


def test_main_warns_once_per_flag_and_serves(monkeypatch, caplog):
    served = {}
    monkeypatch.setattr("comfyserve.server.app.serve", lambda s, exit_after_start: served.update(s=s, q=exit_after_start))
    with caplog.at_level(logging.WARNING):
        cli.main(["--deterministic", "--quick-test-for-ci", "--port", "8200"])
    assert served["q"] is True and served["s"].port == 8200
    assert served["s"].argv == ["main.py", "--deterministic", "--quick-test-for-ci", "--port", "8200"]
    warnings = [r.getMessage() for r in caplog.records if "--deterministic" in r.getMessage()]
    assert len(warnings) == 1 and "no effect" in warnings[0]
    json.dumps(served["s"].argv)


def test_tls_files_must_come_together():
    with pytest.raises(SystemExit):
        cli.main(["--tls-keyfile", "k.pem"])


def test_a_broken_extra_paths_file_stops_start_up_with_its_name(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("- not\n- sections\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["--base-directory", str(tmp_path), "--extra-model-paths-config", str(config)])
    assert stop.value.code == 2
    assert "broken.yaml" in capsys.readouterr().err


def test_preview_flags_take_effect_and_do_not_warn():
    parser = cli.build_parser()
    args = parser.parse_args(["--preview-method", "latent2rgb", "--preview-size", "256"])
    assert cli.unimplemented_flags(args, parser) == []
    s = cli.settings_from_args(args)
    assert (s.preview_method, s.preview_size) == ("latent2rgb", 256)


DEVICE_FLAGS = [
    ["--gpu-only"], ["--highvram"], ["--normalvram"], ["--lowvram"], ["--novram"], ["--force-fp16"],
    ["--force-fp32"], ["--fp16-vae"], ["--bf16-vae"], ["--fp32-vae"], ["--cpu-vae"], ["--fp32-unet"],
    ["--fp64-unet"], ["--bf16-unet"], ["--fp16-unet"], ["--fp16-text-enc"], ["--bf16-text-enc"],
    ["--fp32-text-enc"], ["--reserve-vram", "1.5"], ["--disable-smart-memory"],
]


@pytest.mark.parametrize("flags", DEVICE_FLAGS, ids=lambda f: f[0])
def test_device_and_precision_flags_take_effect_and_do_not_warn(flags):
    from comfyserve.models.devices import DeviceCapability, DevicePolicy, MemoryFlags, VRAMState

    parser = cli.build_parser()
    args = parser.parse_args(flags)
    assert cli.unimplemented_flags(args, parser) == []
    parsed = MemoryFlags.from_args(args)
    if flags == ["--normalvram"]:  # ComfyUI's default mode, chosen explicitly
        gpu = DeviceCapability("cuda", name="NVIDIA GeForce RTX 3060", major=8, minor=6, total_memory=12 << 30)
        assert DevicePolicy.build(parsed, gpu).vram_state is VRAMState.NORMAL_VRAM
    else:
        assert parsed != MemoryFlags()  # each one changes what the device policy is built from
