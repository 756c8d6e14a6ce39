"""The inference engine: models, pipelines and the work queue around them."""
