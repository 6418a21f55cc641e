"""Demo assets: a tiny random-weight model so examples and tests run offline on a CPU."""
