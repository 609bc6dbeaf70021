"""Policy files parsed into typed, validated Policy objects; no OS, network or cloud I/O."""
