"""The backend contract: one suite run against sqlite, mlflow, aim and clearml."""
