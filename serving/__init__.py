"""Serving-side code: numpy predictor and the HTTP contract; no MLflow needed at run time."""
