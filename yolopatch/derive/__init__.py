"""Derive model YAMLs from the stock configs a checkout ships: a recipe's facts (its `[derive]` table)
applied to a stock config's row graph. Nothing here imports torch or the target.

  yamlsubset  reads a config (the YAML subset configs use; PyYAML beyond it)
  modules     what each stock module does to stride and width, from its YAML row
  graph       the config as rows with stable ids; strides and widths computed from `modules`
  facts       the `[derive]` schema of recipe.toml
  backbone, neck, fusion, insert, p2   the transforms, one per kind of recipe
  compose     the order transforms run in, and which combinations of recipes are written
  render      the derived graph as a YAML (templates/derived/model.yaml.j2)
"""
