//! Typed client API of the sched service.
