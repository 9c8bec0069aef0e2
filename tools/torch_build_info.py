"""Prints the facts about the installed torch that the C++ build needs, as CMake -D flags.

Used by setup.py (and therefore `make`), so the library is always built against the torch
that will load it.
"""

from __future__ import annotations

import inspect
import os

import torch
import torch.utils.cpp_extension as cpp_extension


def cxx_standard() -> str:
    """The C++ standard torch's own extension builder uses for this torch version."""
    source = inspect.getsource(cpp_extension)
    return "20" if "-std=c++20" in source else "17"


def cmake_args() -> list[str]:
    """-D flags describing torch's headers, libraries, ABI and version."""
    include_dirs = ";".join(cpp_extension.include_paths())
    library_dir = cpp_extension.library_paths()[0]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [
        f"-DTORCH_INCLUDE_DIRS={include_dirs}",
        f"-DTORCH_LIBRARY_DIR={library_dir}",
        f"-DTORCH_CXX11_ABI={abi}",
        f"-DTORCH_VERSION={torch.__version__}",
        f"-DCOREAI_CXX_STANDARD={cxx_standard()}",
    ]


if __name__ == "__main__":
    print(os.linesep.join(cmake_args()))
