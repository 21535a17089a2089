"""Derive model YAMLs from the stock configs a checkout ships: a recipe's facts (its `[derive]` table)
applied to a stock config's row graph. Nothing here imports torch or the target."""
