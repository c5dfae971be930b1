"""The bottom layer every package may use: run-folder I/O, argument checks, shared CLI pieces.

Nothing here imports another package of the project (see ``common.run_loader`` for the one
exception, which reaches data/ and models/ at call time to load a run)."""
