"""SCALENet cosim."""
