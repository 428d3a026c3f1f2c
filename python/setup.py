"""Build hook of the optiq Python package (metadata: pyproject.toml).

`pip install ./python` (run from the repository root) builds the C library
with the repository's Makefile (`make -C .. all`, i.e. build/liboptiq.so and
build/optiq; OPTIQ_MAKE_BUILD names another build folder, as make's BUILD=)
and bundles both into the package as optiq/_lib/. With
OPTIQ_BUILD_DIR set to a folder that already holds liboptiq.so and optiq
(e.g. build/ after `make`; a relative path is taken from the repository
root), those are bundled and make is not run.

The wheel holds a native library, so it is tagged for the platform
(py3-none-<platform>) instead of pure Python; the Python code itself depends
on no interpreter ABI (ctypes).
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def native_artifacts():
    build = os.environ.get("OPTIQ_BUILD_DIR")
    if build:
        build = os.path.join(ROOT, build)  # a relative path is taken from the repository root
    else:
        if not os.path.isfile(os.path.join(ROOT, "Makefile")) or not os.path.isfile(os.path.join(ROOT, "include", "optiq.h")):
            raise SystemExit(
                "optiq: the C library is built from the optiq source tree: run `pip install ./python` from a "
                "checkout, or set OPTIQ_BUILD_DIR to a folder holding liboptiq.so and optiq"
            )
        jobs = str(max(1, os.cpu_count() or 1))
        build = os.path.join(ROOT, os.environ.get("OPTIQ_MAKE_BUILD") or "build")
        subprocess.check_call(["make", "-C", ROOT, "-j" + jobs, "BUILD=" + build, "all"])
    lib, cli = os.path.join(build, "liboptiq.so"), os.path.join(build, "optiq")
    for f in (lib, cli):
        if not os.path.isfile(f):
            raise SystemExit("optiq: %s is missing (build it with make, or fix OPTIQ_BUILD_DIR)" % f)
    return lib, cli


class BuildPy(build_py):
    """build_py plus the native library and the command, copied into optiq/_lib/."""

    def run(self):
        super().run()
        lib, cli = native_artifacts()
        dest = os.path.join(self.build_lib, "optiq", "_lib")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(lib, os.path.join(dest, "liboptiq.so"))
        shutil.copy2(cli, os.path.join(dest, "optiq"))
        os.chmod(os.path.join(dest, "optiq"), 0o755)


cmdclass = {"build_py": BuildPy}
try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools older than 70.1: the wheel package's command
    try:
        from wheel.bdist_wheel import bdist_wheel
    except ImportError:
        bdist_wheel = None

if bdist_wheel is not None:

    class PlatformWheel(bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = PlatformWheel

setup(cmdclass=cmdclass)
