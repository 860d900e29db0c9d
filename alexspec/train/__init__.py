"""The generic trainer: any compiled spec, any data source, the spec's recipe, safe checkpoints."""
