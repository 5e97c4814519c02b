"""SCALENet rtl."""
