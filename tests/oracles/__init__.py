"""Copies of the original medical-VQA scorers, used only as test oracles for harness.judges.exact.

Each module is headed by its source repository, path, commit and licence. They are never imported by the
harness itself; tests run them side by side with the `exact` judge and require identical numbers.
"""
