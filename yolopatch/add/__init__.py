"""`yolopatch add FILE.py`: a tutorial's module file made into a local recipe of the checkout and applied.

scan.py      what the file defines (read with ast; the file is never imported or run here)
infer.py     each class's role from its constructor and forward, or the user's --role
rewrite.py   the file's imports of the target package, rewritten for this checkout (libcst)
measure.py   backbones' output channels and strides, from a probe in the target's interpreter
author.py    the recipe folder: recipe.toml and the module file
"""
