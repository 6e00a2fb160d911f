"""The orchestrator: faces (cli, api, demo), automation, the release state machine (core), evidence
and verdicts (analysis), the deployment's adapters and their settings. docs/architecture.md draws
the layers; pyproject.toml's import-linter contracts keep them."""
