"""Sphinx configuration of the skdeepcluster documentation site.

Build it (warnings are errors) with::

    python3 -m pip install torch==2.13.0 -e ".[docs]"
    python3 -m sphinx -W -b html docs docs/_build/html

The gallery runs every ``examples/plot_*.py`` (under a minute together on 2 CPU cores); the
full benchmarks in ``examples/`` are not run by the build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import skdeepcluster

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))  # the gallery's examples import _data
os.environ.setdefault("OMP_NUM_THREADS", "2")

project = "skdeepcluster"
author = "the skdeepcluster developers"
copyright = "2026, the skdeepcluster developers"
release = skdeepcluster.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "generated_gallery/*.ipynb", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# ---------------------------------------------------------------- API reference
autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
# Parameters documented as "float or None, default=None" and the like: plain words, not xrefs
numpydoc_xref_param_type = False

# Markdown pages (benchmarks, design, paper settings): dollar maths, heading anchors
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3


# ---------------------------------------------------------------- the gallery
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "generated_gallery",
    # only the short plot_*.py examples; the benchmarks and their helpers stay out of the build
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"^(?!plot_)",  # matched against the file name
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}

# ---------------------------------------------------------------- HTML
html_theme = "alabaster"
html_title = f"skdeepcluster {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Deep clustering as scikit-learn estimators",
    "fixed_sidebar": True,
}
