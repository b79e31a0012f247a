"""Data contracts: great-expectations 1.x suites on the ingested tables and the splits, with Data Docs.

Importing this package does not import great_expectations (that happens in `validate_dataset`).
"""

from pipelines.validate.core import DataContractError, Failure, ValidationReport, validate_dataset
from pipelines.validate.params import ValidateParams

__all__ = ["DataContractError", "Failure", "ValidateParams", "ValidationReport", "validate_dataset"]
