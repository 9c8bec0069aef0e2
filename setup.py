"""Builds coreai_opt/_C.so, the one shared library of all csrc/ code, with CMake.

Build against the torch that is installed (``pip install --no-build-isolation -e .``): the
binary is tied to that torch version, which is recorded in coreai_opt/_build_info.py and
checked before the library is loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
BUILD_DIR = ROOT / "build" / "cmake"


class CMakeExtension(Extension):
    """An extension whose sources CMake knows; setuptools only places the result."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures and builds the CMake target coreai_opt_C, then installs _C.so."""

    def build_extension(self, ext: Extension) -> None:
        import torch

        sys.path.insert(0, str(ROOT / "tools"))
        from torch_build_info import cmake_args

        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        subprocess.check_call(
            ["cmake", "-S", str(ROOT), "-B", str(BUILD_DIR), *generator, *cmake_args()]
        )
        jobs = os.environ.get("COREAI_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(
            ["cmake", "--build", str(BUILD_DIR), "--target", "coreai_opt_C", "-j", jobs]
        )
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUILD_DIR / "_C.so", target)
        info = (
            '"""Written by setup.py: the torch this build of _C.so was compiled against."""\n\n'
            f'TORCH_VERSION = "{torch.__version__}"\n'
        )
        for package_dir in {ROOT / "coreai_opt", target.parent}:
            (package_dir / "_build_info.py").write_text(info)


setup(ext_modules=[CMakeExtension("coreai_opt._C")], cmdclass={"build_ext": CMakeBuild})
