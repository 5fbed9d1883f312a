"""A portable build of ``llama-cpp-python``, the project's real CPU engine, keyed by its flags.

``pip install llama-cpp-python`` compiles llama.cpp with ``GGML_NATIVE=ON``: the library uses
every instruction the build machine has (AVX-512, AMX, ...). Such a build crashes (SIGSEGV or
SIGILL) on CPUs it was not built for, and on some CPUs it was built for (the AMX paths of
0.3.36 crash on Sapphire Rapids-class Xeons). pip then caches the wheel by version alone, not by
its ``CMAKE_ARGS``, so a native wheel is reused silently by later installs.

This module builds the wheel itself, with flags chosen here, into a folder named by a key of
everything that shapes the binary (version, Python tag, machine, flags; for a native build, the
CPU too), and installs that wheel. pip's own wheel cache is never read or written for it.

Build kinds (``--kind`` or ``CATO_LLAMACPP_BUILD``):

- ``portable`` (default): x86-64 with AVX2/FMA/F16C (x86-64-v3), no AVX-512, no AMX; on a CPU
  without AVX2, the SSE4.2 baseline. On other machines (aarch64) the generic target.
- ``native``: ``GGML_NATIVE=ON`` for a user who knows the CPU; keyed by the CPU's model and
  flags, so it is never reused on another CPU.
- ``custom``: the flags in ``CATO_LLAMACPP_CMAKE_ARGS`` as given.

Usage::

    python -m cato.workloads.llamacpp_build ensure   # build if missing, install if different
    python -m cato.workloads.llamacpp_build ensure --force   # build again
    python -m cato.workloads.llamacpp_build key      # the key and the flags, nothing built
    python -m cato.workloads.llamacpp_build check    # load the packaged GGUF, generate tokens

Standard library only: it runs before the package's extras are installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cato.exits import EngineExited

VERSION = "0.3.36"
"""The pinned ``llama-cpp-python`` release; ``--version`` or ``CATO_LLAMACPP_VERSION`` override."""

KINDS = ("portable", "native", "custom")

X86_PORTABLE = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_BMI2=ON",
    "-DGGML_AVX_VNNI=OFF",
    "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512_VNNI=OFF",
    "-DGGML_AVX512_BF16=OFF",
    "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
)
"""x86-64-v3: any x86-64 CPU since Haswell (2013) / Zen 1."""

X86_BASELINE = (
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=OFF", "-DGGML_AVX2=OFF", "-DGGML_FMA=OFF", "-DGGML_F16C=OFF", "-DGGML_BMI2=OFF",
    "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
)
"""For an x86-64 CPU without AVX2 (SSE4.2 only): slower, runs anywhere."""

GENERIC = ("-DGGML_NATIVE=OFF",)
NATIVE = ("-DGGML_NATIVE=ON",)

MARKER = ".cato-llamacpp-build.json"
"""Written into the environment's prefix: the key of the installed build."""


class BuildError(RuntimeError):
    """The wheel could not be built or installed, or the built engine does not run."""


@dataclass(frozen=True)
class BuildSpec:
    """Everything that shapes the binary, and the key it is stored under."""

    kind: str
    version: str
    cmake_args: tuple[str, ...]
    python_tag: str
    machine: str
    cpu: str
    """The CPU's identity (model and flags) for a native build; empty otherwise."""

    @property
    def key(self) -> str:
        digest = hashlib.sha256(
            "\n".join([self.version, *self.cmake_args, self.cpu]).encode()
        ).hexdigest()[:12]
        return f"llama_cpp_python-{self.version}-{self.python_tag}-{self.machine}-{self.kind}-{digest}"

    def describe(self) -> dict[str, object]:
        return {
            "key": self.key, "kind": self.kind, "version": self.version,
            "cmake_args": list(self.cmake_args), "python_tag": self.python_tag,
            "machine": self.machine, "cpu": self.cpu,
        }


# -- what the machine is ----------------------------------------------------------------------


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` of the first processor in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_identity(cpuinfo: str) -> str:
    """Model name plus sorted flags: what a native build depends on."""
    model = ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            model = value.strip()
            break
    return f"{model} | {' '.join(sorted(cpu_flags(cpuinfo)))}"


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def portable_args(machine: str, flags: frozenset[str]) -> tuple[str, ...]:
    """The portable flags for this machine: x86-64-v3 where the CPU has AVX2, else baseline."""
    if machine in ("x86_64", "amd64", "AMD64"):
        if flags and "avx2" not in flags:
            return X86_BASELINE
        return X86_PORTABLE
    return GENERIC


def resolve(
    kind: str | None = None,
    version: str | None = None,
    env: Mapping[str, str] | None = None,
    machine: str | None = None,
    cpuinfo: str | None = None,
) -> BuildSpec:
    """The build to use: arguments first, then ``CATO_LLAMACPP_*`` variables, then defaults."""
    env = os.environ if env is None else env
    kind = kind or env.get("CATO_LLAMACPP_BUILD") or "portable"
    if kind not in KINDS:
        raise BuildError(
            f"CATO_LLAMACPP_BUILD / --kind: unknown build kind {kind!r}; one of {', '.join(KINDS)}"
        )
    version = version or env.get("CATO_LLAMACPP_VERSION") or VERSION
    machine = machine or platform.machine()
    info = read_cpuinfo() if cpuinfo is None else cpuinfo
    cpu = ""
    if kind == "portable":
        args = portable_args(machine, cpu_flags(info))
    elif kind == "native":
        args = NATIVE
        cpu = cpu_identity(info)
    else:
        custom = env.get("CATO_LLAMACPP_CMAKE_ARGS", "").split()
        if not custom:
            raise BuildError("--kind custom needs the flags in CATO_LLAMACPP_CMAKE_ARGS")
        args = tuple(custom)
    return BuildSpec(kind, version, tuple(args), python_tag(), machine, cpu)


def wheel_root(env: Mapping[str, str] | None = None) -> Path:
    """Where built wheels are kept: ``CATO_WHEEL_DIR``, else ``$XDG_CACHE_HOME/cato/wheels``."""
    env = os.environ if env is None else env
    if env.get("CATO_WHEEL_DIR"):
        return Path(env["CATO_WHEEL_DIR"])
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cato" / "wheels"


# -- building and installing ------------------------------------------------------------------


def built_wheel(spec: BuildSpec, root: Path) -> Path | None:
    """The wheel stored under ``spec``'s key, if a complete one is there."""
    folder = root / spec.key
    if not (folder / "build.json").is_file():
        return None
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    return wheels[0] if wheels else None


def build(spec: BuildSpec, root: Path, python: str = sys.executable) -> Path:
    """Build the wheel from the sdist with ``spec``'s flags, into ``root/<key>/``.

    pip's cache is bypassed (``--no-cache-dir``), so neither a cached native wheel is taken nor
    this one cached under the bare version. The folder appears whole or not at all."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["CMAKE_ARGS"] = " ".join(spec.cmake_args)
    env["FORCE_CMAKE"] = "1"
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    started = time.monotonic()
    print(
        f"building llama-cpp-python {spec.version} ({spec.kind}: {env['CMAKE_ARGS']}); "
        f"about 4 minutes on 2 cores, once per build key",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="cato-llamacpp-", dir=root) as tmp:
        staging = Path(tmp) / spec.key
        staging.mkdir()
        cmd = [
            python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps",
            "--no-binary", "llama-cpp-python", "--wheel-dir", str(staging),
            f"llama-cpp-python=={spec.version}",
        ]
        log = Path(tmp) / "build.log"
        with log.open("wb") as fh:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-40:]
            raise BuildError(
                f"building llama-cpp-python {spec.version} failed (exit {proc.returncode}); "
                "last lines:\n" + "\n".join(tail)
            )
        wheels = list(staging.glob("llama_cpp_python-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"pip wheel left {len(wheels)} llama-cpp-python wheels in {staging}")
        info = spec.describe() | {"built_s": round(time.monotonic() - started, 1)}
        (staging / "build.json").write_text(json.dumps(info, indent=2) + "\n")
        final = root / spec.key
        if final.exists():  # a half-written folder of an older run (no build.json)
            shutil.rmtree(final)
        staging.rename(final)
    print(f"built in {time.monotonic() - started:.0f} s: {final}", flush=True)
    wheel = built_wheel(spec, root)
    assert wheel is not None
    return wheel


def installed_key(prefix: Path | None = None) -> str | None:
    """The key of the build installed in this environment, if this module installed it."""
    marker = (prefix or Path(sys.prefix)) / MARKER
    try:
        return str(json.loads(marker.read_text())["key"])
    except (OSError, ValueError, KeyError):
        return None


def install(spec: BuildSpec, wheel: Path, python: str = sys.executable) -> None:
    """Install ``wheel`` over whatever ``llama-cpp-python`` the environment has."""
    cmd = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
           "--no-cache-dir", str(wheel)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"installing {wheel.name} failed:\n{proc.stdout}{proc.stderr}")
    (Path(sys.prefix) / MARKER).write_text(json.dumps(spec.describe(), indent=2) + "\n")


def ensure(spec: BuildSpec, root: Path, *, force: bool = False) -> Path:
    """Build ``spec`` unless stored (``force``: build again), and install it unless it is
    what is installed."""
    if force and (root / spec.key).exists():
        shutil.rmtree(root / spec.key)
    wheel = built_wheel(spec, root) or build(spec, root)
    if installed_key() != spec.key or not _importable("llama_cpp"):
        print(f"installing {wheel.name} ({spec.kind} build {spec.key})", flush=True)
        install(spec, wheel)
    else:
        print(f"llama-cpp-python: {spec.kind} build {spec.key} already installed", flush=True)
    return wheel


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- does it run ------------------------------------------------------------------------------

CHECK_SCRIPT = """
import sys, time
from llama_cpp import Llama
from cato.workloads.llamacpp import gguf_path
llm = Llama(model_path=str(gguf_path()), n_ctx=256, n_threads=1, verbose=False)
t0 = time.monotonic()
out = llm("def fibonacci(n):", max_tokens=int(sys.argv[1]), temperature=0.0)
n = out["usage"]["completion_tokens"]
print(f"generated {n} tokens in {time.monotonic() - t0:.2f} s")
"""


def check(tokens: int = 16, python: str = sys.executable, timeout_s: float = 300.0) -> str:
    """Load the packaged GGUF with the installed llama.cpp in a subprocess and generate
    ``tokens`` tokens. A crash is reported as ``exited with signal SIGSEGV``, not as a hang."""
    proc = subprocess.run(
        [python, "-c", CHECK_SCRIPT, str(tokens)],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    if proc.returncode != 0:
        exited = EngineExited("llama.cpp (in-process check)", proc.returncode,
                              proc.stdout + proc.stderr, when=f"while generating {tokens} tokens")
        raise BuildError(f"{exited}\nRebuild portably: `CATO_LLAMACPP_BUILD=portable make test`")
    return proc.stdout.strip()


# -- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cato.workloads.llamacpp_build",
        description="Build and install llama-cpp-python with portable flags, keyed by its flags.",
    )
    parser.add_argument("action", choices=("ensure", "key", "check"))
    parser.add_argument("--kind", choices=KINDS, default=None,
                        help="portable (default), native, or custom (CATO_LLAMACPP_CMAKE_ARGS)")
    parser.add_argument("--version", default=None, help=f"llama-cpp-python version ({VERSION})")
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated by `check`")
    parser.add_argument("--force", action="store_true",
                        help="`ensure`: build again even if this key's wheel is stored")
    args = parser.parse_args(argv)
    try:
        if args.action == "check":
            print(check(args.tokens), flush=True)
            return 0
        spec = resolve(args.kind, args.version)
        root = wheel_root()
        if args.action == "key":
            stored = built_wheel(spec, root)
            print(json.dumps(spec.describe() | {"wheel": str(stored) if stored else None,
                                                 "installed_key": installed_key()}, indent=2))
            return 0
        ensure(spec, root, force=args.force)
        return 0
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
