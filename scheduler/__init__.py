"""SCALENet scheduler."""
