"""Ships the example scenarios (scenarios/, top level in the checkout) inside the wheel as
sim/data/examples/, so `floodgate init` works from an installed package. Everything else about
the build is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithExamples(build_py):
    def run(self):
        super().run()
        src = Path(__file__).resolve().parent / "scenarios"
        dst = Path(self.build_lib) / "sim" / "data" / "examples"
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            for f in sorted(src.rglob("*.yaml")):
                out = dst / f.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)


setup(cmdclass={"build_py": BuildWithExamples})
