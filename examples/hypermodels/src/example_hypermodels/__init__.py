"""Example hypermodels for tuner-service: a small CNN for images and a wide & deep model for vectors."""
