"""Ship Hydra's config tree, the top-level `conf/`, inside the wheel as `percli/conf/` (project metadata is in
pyproject.toml). A checkout reads `conf/` in place (percli/paths.py), so an editable install copies nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConf(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            shutil.copytree(Path(__file__).parent / "conf", Path(self.build_lib) / "percli" / "conf",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithConf})
