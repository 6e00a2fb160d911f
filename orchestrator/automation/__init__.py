"""Jobs run for the operator: alert rules, rollback drills, the post-release monitor. Imports the
core and below; never a face."""
