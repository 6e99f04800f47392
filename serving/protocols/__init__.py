"""One adapter per protocol over the scoring core: this service's own, MLflow's, and the Open Inference Protocol V2."""
