"""Build step: ship the Hydra config tree ``conf/`` inside the package, as ``robustbench_local/conf``.

``conf/`` stays at the top of the checkout, where it is edited. A wheel (``pip install .``, ``pip wheel .``)
copies it into the package, so an installed ``rbl`` runs from any directory; ``robustbench_local.api`` looks
there first and then beside the package (the checkout, editable installs). Everything else is in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    """``build_py`` that also copies ``conf/**/*.yaml`` to ``robustbench_local/conf/`` (not in editable mode)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return   # the checkout's conf/ is used in place
        for src in sorted(Path("conf").rglob("*.yaml")):
            dst = Path(self.build_lib, "robustbench_local", src)
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithConf})
