"""Launchers: given a problem, a config and a call's tensors, prepare each kernel's launch (grid,
scalars, constexprs) once; the returned `run` takes only the tensors. Which variant and config a
call gets is decided above, in planning (`registry`, `dispatch`); nothing here imports it."""
