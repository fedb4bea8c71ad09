"""edgeopt.study: every optimization alone and combined, measured on the models with real data.

`edgeopt study [--quick]` (see edgeopt/study/cli.py) runs the rows of `recipes` on the models of
`subjects` in the stages of `runner` and writes the report of `report`. Importing this package is light.
"""
