//! Typed client API of the ipc service.
