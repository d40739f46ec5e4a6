-- Runs once, when the postgres-data volume is first initialised: POSTGRES_DB (mlflow) exists
-- already; the Prefect server gets its own database in the same server.
CREATE DATABASE prefect;
