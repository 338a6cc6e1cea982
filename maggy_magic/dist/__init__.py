"""Data-parallel training: one training function run by a gang of ranks that train one
model together (framework runners: :mod:`.tf`)."""
