"""Notifications to the outside world (webhooks). An adapter: imports nothing of bluegreen."""
