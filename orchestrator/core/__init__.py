"""The release state machine: plan, release, rollback, recovery, failover, lifecycle, workers, schema
changes, snapshots, status, and the events they report. Imports analysis, the deployment and the
adapters below them; never a face (cli, api) or automation."""
