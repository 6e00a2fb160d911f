"""The deployment's state database: live colour, environments, documents, the audit log (store.py),
the release journal and the lock. Imports common and errors only."""
