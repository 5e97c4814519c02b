"""SCALENet boards."""
