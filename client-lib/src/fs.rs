//! Typed client API of the fs service.
