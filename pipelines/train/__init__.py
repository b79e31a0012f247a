"""Patient-grouped cross-validated YOLO11 training (ultralytics), resumable per fold: see `pipelines.train.core`.

Nothing is imported here: `pipelines.config` imports `pipelines.train.params`, and the training core imports
config-dependent stages, so eager imports would be circular.
"""
