"""Train, track, register and promote a scikit-learn classifier with MLflow."""
