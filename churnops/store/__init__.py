"""The prediction log store: one interface (`base`), the embedded SQLite and MongoDB backends, and the factory."""
