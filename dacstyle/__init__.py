"""dacstyle: benchmarks inside Apptainer/Singularity images, used as local Python objects."""

__version__ = "0.1.0"
