"""`yolopatch add FILE.py`: a tutorial's module file made into a local recipe of the checkout and applied.

compose.py   the steps, each refusing before anything is planned or written
scan.py      what the file defines (read with ast; the file is never imported or run here)
infer.py     each class's role from its constructor and forward, or the user's --role
rewrite.py   the file's imports of the target package, rewritten for this checkout (a libcst edit)
layout.py    the checkout's modules, read from its files, for that rewrite
measure.py   backbones' output channels and strides, from probe_backbones.py in the target's interpreter
author.py    the recipe folder: recipe.toml and the module file
"""
