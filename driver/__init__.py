"""SCALENet driver."""
