"""Registration of the evaluated detector in MLflow: a pyfunc model that carries its own preprocessing (issue 10)."""
