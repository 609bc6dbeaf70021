"""Host daemon: sensors, attribution, sessions, sealer, spool and shipper (see DESIGN.md)."""
