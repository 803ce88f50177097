"""The features that plug into the runner (sqsjobs.runner.Hook), wired by the App in this order."""
