# Sphinx configuration for minidl's documentation site. `make docs` builds it: the notebooks are
# processed by nbdev, bridged into plain MyST notebooks by `minidl.docsite`, then rendered offline
# from their committed outputs (nothing is re-executed, nothing is fetched from the network).
project = "minidl"
author = "minidl developers"
copyright = "2026, minidl developers"

extensions = ["myst_nb", "sphinx-mathjax-offline"]   # the package installs under that (hyphenated) name
nb_execution_mode = "off"                   # outputs are committed with the notebooks
nb_render_markdown_format = "myst"          # math inside show_doc's markdown gets typeset
myst_enable_extensions = ["dollarmath", "amsmath", "attrs_inline", "colon_fence"]
myst_all_links_external = True              # nbdev's `page.html#name` links are plain links
myst_heading_anchors = 3
exclude_patterns = []
suppress_warnings = ["mystnb.unknown_mime_type"]   # e.g. widget state some outputs carry

html_theme = "sphinx_book_theme"
html_title = "minidl"
html_theme_options = {"show_toc_level": 2, "use_download_button": False, "use_fullscreen_button": False,
                      "navigation_with_keys": False}
html_static_path = []
html_last_updated_fmt = None
