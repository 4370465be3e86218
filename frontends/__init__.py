"""Frontends (imported as `lpcc.frontends`): torch.export importer, @jit tracer,
the torch.compile backend. Filled by the frontend issues."""
