"""The zoo: nine networks of the paper's two applications."""
