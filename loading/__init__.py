"""Loading a run folder: its config, its model and its data split (above models/ and data/)."""
