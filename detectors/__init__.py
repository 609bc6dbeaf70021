"""Pure detectors: events and explicit state in, findings out; no OS, network or cloud I/O."""
