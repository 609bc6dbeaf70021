"""Central service: ingest, store, API, transports, review and reports (see DESIGN.md)."""
