"""Evaluation: metric accumulators (`metrics`), the official Cityscapes evaluation (`cityscapes`), the distributed
runner (`runner`), prediction writing (`predict`) and reporting (`report`). Import the submodules directly."""
