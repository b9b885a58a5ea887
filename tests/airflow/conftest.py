import sys
from pathlib import Path

# The DAG folder is on Airflow's import path; the tests import its helpers the same way.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
