//! The Docker executor's half that needs no engine: a plan as the
//! container specs (Docker Engine API `ContainerCreate` bodies) that run it.
