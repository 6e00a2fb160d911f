"""The core: settings, state, release, rollback, recovery, analysis, proxy drivers and the CLI."""
