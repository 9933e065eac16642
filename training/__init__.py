"""Training, installed as `toolformer_router.training`: BFCL data and synthetic examples, the curriculum, evaluation
and calibration, registered as `toolformer-router data | train | eval | calibrate`."""
