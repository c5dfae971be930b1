"""The bottom layer every package may use: run-folder I/O, argument checks, shared CLI pieces.

Nothing here imports another package of the project (loading a run, which needs data/ and models/,
is ``loading.run_loader``, a layer above)."""
