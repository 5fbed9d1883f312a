"""The portable llama.cpp build: which flags, which key, where it is kept, and how a crash of
the built engine is reported."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cato.workloads import llamacpp_build as B

AMX_CPU = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
           "flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 avx512f avx512bw amx_tile amx_int8\n")
ZEN_CPU = ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"
           "flags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2\n")
OLD_CPU = "processor\t: 0\nmodel name\t: Intel(R) Core(TM)2 Duo\nflags\t\t: fpu sse4_1 sse4_2\n"


def spec(kind: str = "portable", cpuinfo: str = AMX_CPU, machine: str = "x86_64",
         env: dict[str, str] | None = None, version: str | None = None) -> B.BuildSpec:
    return B.resolve(kind, version, env=env or {}, machine=machine, cpuinfo=cpuinfo)


def test_portable_build_turns_off_every_cpu_specific_instruction_set() -> None:
    args = spec().cmake_args
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX2=ON" in args
    for off in ("AVX512", "AMX_TILE", "AMX_INT8", "AMX_BF16", "AVX512_VNNI", "AVX_VNNI"):
        assert f"-DGGML_{off}=OFF" in args, off
    assert not any(a.endswith("=ON") and ("AVX512" in a or "AMX" in a) for a in args)


def test_portable_build_is_the_same_on_every_avx2_cpu() -> None:
    amx, zen = spec(cpuinfo=AMX_CPU), spec(cpuinfo=ZEN_CPU)
    assert amx.key == zen.key and amx.cmake_args == zen.cmake_args and amx.cpu == ""


def test_a_cpu_without_avx2_gets_the_baseline_and_its_own_key() -> None:
    old = spec(cpuinfo=OLD_CPU)
    assert "-DGGML_AVX2=OFF" in old.cmake_args and "-DGGML_FMA=OFF" in old.cmake_args
    assert old.key != spec().key


def test_other_machines_get_the_generic_target() -> None:
    arm = spec(machine="aarch64", cpuinfo="Features\t: fp asimd\n")
    assert arm.cmake_args == ("-DGGML_NATIVE=OFF",) and "aarch64" in arm.key


def test_native_build_is_keyed_by_the_cpu() -> None:
    amx, zen = spec("native", AMX_CPU), spec("native", ZEN_CPU)
    assert amx.cmake_args == ("-DGGML_NATIVE=ON",)
    assert "amx_tile" in amx.cpu and "Xeon" in amx.cpu
    assert amx.key != zen.key, "a native wheel must never be reused on another CPU"
    assert amx.key != spec("portable", AMX_CPU).key
    assert "-native-" in amx.key and "-portable-" in spec().key


def test_key_follows_version_and_flags() -> None:
    assert spec(version="0.3.35").key != spec().key
    a = spec("custom", env={"CATO_LLAMACPP_CMAKE_ARGS": "-DGGML_NATIVE=OFF -DGGML_AVX2=OFF"})
    b = spec("custom", env={"CATO_LLAMACPP_CMAKE_ARGS": "-DGGML_NATIVE=OFF"})
    assert a.cmake_args == ("-DGGML_NATIVE=OFF", "-DGGML_AVX2=OFF") and a.key != b.key


def test_environment_chooses_kind_and_version() -> None:
    s = B.resolve(env={"CATO_LLAMACPP_BUILD": "native", "CATO_LLAMACPP_VERSION": "0.3.30"},
                  machine="x86_64", cpuinfo=ZEN_CPU)
    assert s.kind == "native" and s.version == "0.3.30"
    assert B.resolve(env={}, machine="x86_64", cpuinfo=ZEN_CPU).version == B.VERSION


def test_bad_kind_and_missing_custom_flags_are_named() -> None:
    with pytest.raises(B.BuildError, match="unknown build kind 'fast'"):
        B.resolve(env={"CATO_LLAMACPP_BUILD": "fast"}, machine="x86_64", cpuinfo=ZEN_CPU)
    with pytest.raises(B.BuildError, match="CATO_LLAMACPP_CMAKE_ARGS"):
        spec("custom")
    assert B.main(["key", "--kind", "custom"]) == 1


def test_wheel_root_and_stored_wheels(tmp_path: Path) -> None:
    assert B.wheel_root({"CATO_WHEEL_DIR": str(tmp_path)}) == tmp_path
    assert B.wheel_root({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "cato" / "wheels"
    s = spec()
    folder = tmp_path / s.key
    folder.mkdir()
    (folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl").write_bytes(b"")
    assert B.built_wheel(s, tmp_path) is None, "a folder without build.json is half-written"
    (folder / "build.json").write_text(json.dumps(s.describe()))
    assert B.built_wheel(s, tmp_path) == folder / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    assert B.built_wheel(spec("native"), tmp_path) is None


def test_installed_key_reads_the_marker(tmp_path: Path) -> None:
    assert B.installed_key(tmp_path) is None
    (tmp_path / B.MARKER).write_text(json.dumps(spec().describe()))
    assert B.installed_key(tmp_path) == spec().key
    (tmp_path / B.MARKER).write_text("not json")
    assert B.installed_key(tmp_path) is None


def test_check_names_a_crash_by_its_signal(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'llama_model_load: loaded meta data'\nkill -SEGV $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(B.BuildError) as info:
        B.check(4, python=str(fake))
    msg = str(info.value)
    assert "exited with signal SIGSEGV while generating 4 tokens" in msg
    assert "llama_model_load: loaded meta data" in msg
    assert "CATO_LLAMACPP_BUILD=portable" in msg


@pytest.mark.llamacpp
def test_installed_build_is_portable_and_generates() -> None:
    """What `make test` installed: this module's build, of the kind asked for, and it runs."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    wanted = B.resolve(env=os.environ)
    assert B.installed_key() == wanted.key, "llama-cpp-python was not installed by the build step"
    out = B.check(8)
    assert out.startswith("generated 8 tokens"), out
